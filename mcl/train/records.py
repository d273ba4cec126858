"""What a run records besides its scores: the per-step training log and the generations behind each score.

`metrics/train_log.csv` has one row per optimizer step (phase, step, lr, loss and whatever the method
adds through `Method.log_values`, e.g. I-LoRA's CE_cur, CE_buf and ‖slow − fast‖); a resumed run
drops the rows after its checkpoint and continues. `predictions/<phase>-<task>.jsonl` holds one
{prompt, answer, generation, score} per scored example, so a score of 0.000 can be read, not guessed.
`metrics/examples/phase-<k>.csv.gz` holds every view's per-example loss sum, label-token count and
metric score of every task after phase k (all processes' shards): paired tests over examples read it.
`recorded_max_len` reads back the `max_len` a checkpoint was trained with (its mcl.json, else its run's
config.yaml), so analysis of a run scores the same tokens the run did.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import torch

from mcl.errors import MclError
from mcl.io import atomic_path, naming, write_text_atomic

BASE_COLUMNS = ["phase", "step", "lr", "loss"]


def task_dirs(run_dir: str | Path) -> list[Path]:
    """A run's per-task checkpoint dirs `tasks/<k>-<task>/` in task order (k as a number: 10 follows 9)."""
    dirs = [d for d in (Path(run_dir) / "tasks").iterdir() if d.is_dir() and d.name.split("-", 1)[0].isdigit()]
    return sorted(dirs, key=lambda d: int(d.name.split("-", 1)[0]))


def _max_len_value(value: Any, where: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MclError(f"{where}: max_len must be an integer >= 1, got {value!r}")
    return value


def recorded_max_len(adapter_dir: str | Path | None, meta: dict[str, Any]) -> int | None:
    """The max_len a checkpoint was trained with, or None when nothing records it.

    Its mcl.json's `max_len` first, else `train.max_len` in the config.yaml of the run dir it sits in
    (`<run>/tasks/<k>-<task>[/<learner>]`).
    """
    if meta.get("max_len") is not None:
        return _max_len_value(meta["max_len"], Path(adapter_dir or ".") / "mcl.json")
    if adapter_dir is None:
        return None
    for d in list(Path(adapter_dir).resolve().parents)[:2]:  # tasks/ is the parent or the grandparent
        config = d.parent / "config.yaml"
        if d.name == "tasks" and config.is_file():
            import yaml

            from mcl.train.config import TrainSpec

            run = yaml.safe_load(config.read_text(encoding="utf-8"))
            train = run.get("train") if isinstance(run, dict) else None
            if not isinstance(train, dict):
                return None
            return _max_len_value(train.get("max_len", TrainSpec.max_len), config)
    return None


class TrainLog:
    """`metrics/train_log.csv`, appended one row per step; a new column (e.g. replay starting) rewrites it once."""

    def __init__(self, path: str | Path, resume_at: tuple[int, int] = (0, 0)):
        """Open the log, keeping only the rows before `resume_at` = (phase, step) of a resumed run."""
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if (int(r["phase"]), int(r["step"])) < resume_at]
        self.columns = list(dict.fromkeys([*BASE_COLUMNS, *(k for r in self.rows for k in r)]))
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def add(self, row: dict[str, float | int]) -> None:
        """Append one step's values."""
        self.rows.append(row)
        if any(k not in self.columns for k in row):
            self.columns += [k for k in row if k not in self.columns]
            self._rewrite()
            return
        with naming(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)


def write_predictions(dest: str | Path, records: list[dict]) -> None:
    """One JSON line per {prompt, answer, generation, score}, written atomically."""
    write_text_atomic(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


EXAMPLE_COLUMNS = ["view", "task", "example", "loss_sum", "tokens", "score"]


def write_example_scores(dest: str | Path, parts: list[tuple[str, str, torch.Tensor]]) -> None:
    """One gzip CSV row per (view, task, example): loss sum, label tokens, score (NaN when not generated)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXAMPLE_COLUMNS)
    for view, task, p in parts:
        for j, (loss_sum, tokens, score) in enumerate(p.T.tolist()):
            writer.writerow([view, task, j, repr(loss_sum), int(tokens), repr(score)])
    with atomic_path(dest, suffix=".gz") as tmp:
        Path(tmp).write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
