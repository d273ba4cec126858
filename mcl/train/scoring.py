"""Scoring during a run (loss and task metric per task) and the run's metric files.

Files written under runs/<name>/metrics/: base.json (base model), phase-<k>.json (each phase's
scores per evaluation view), R.csv / R_loss.csv for the primary view (and, with several views,
R_<view>.csv / R_loss_<view>.csv for every view, e.g. R_slow.csv and R_fast.csv), summary.json with OP/BWT/FWT/forgetting for scores and for loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mcl.eval.evaluate import TaskEvaluator
from mcl.io import atomic_path, read_json_record, write_json_atomic
from mcl.train.metrics import cl_metrics, cl_metrics_loss


class Scorer:
    """One prepared TaskEvaluator per task of a run (tokenised once, reused after every phase).

    Given a multi-process `accelerator`, each process scores its shard of every eval set and the
    per-example parts are summed across processes, so no process waits on another's whole evaluation.
    """

    def __init__(self, data, tokenizer, eval_spec, max_len: int, text=None, accelerator=None):
        self.names = [d.name for d in data]
        self.generate = eval_spec.generate
        self.accelerator = accelerator if accelerator is not None and accelerator.num_processes > 1 else None
        shard = (self.accelerator.process_index, self.accelerator.num_processes) if self.accelerator else (0, 1)
        self.evaluators = [
            TaskEvaluator(tokenizer, d.task, eval_spec.split, eval_spec.batch_size, max_len, eval_spec.max_examples,
                          text=text, shard=shard)
            for d in data
        ]

    def score(self, model, i: int, records: list[dict] | None = None, examples: list | None = None) -> dict:
        """Loss and (when enabled) task metric of task i for the model as it is now (a collective call when sharded).

        Generations go into `records` (this process's shard of the examples when sharded); the whole
        split's (3, n) per-example parts (loss sum, tokens, score; NaN scores without generation) into `examples`.
        """
        evaluator = self.evaluators[i]
        parts = evaluator.example_parts(model, generate=self.generate, records=records)
        if self.accelerator is not None:
            parts = self.accelerator.reduce(parts.to(self.accelerator.device), reduction="sum").cpu()
        if examples is not None:
            examples.append(parts if self.generate else torch.cat([parts[:2], torch.full_like(parts[2:], float("nan"))]))
        r = evaluator.summarize(parts, generate=self.generate)
        return {k: r[k] for k in ("loss", "metric", "metric_name", "higher_is_better", "chance")}

    def score_all(self, model, progress: bool = False, desc: str = "scoring") -> dict:
        """Scores for every task, keyed by task name (with a progress bar over the tasks when asked)."""
        from tqdm.auto import tqdm

        return {name: self.score(model, i) for i, name in enumerate(tqdm(self.names, desc=desc, unit="task",
                                                                         disable=not progress, leave=False))}


def _is_score(x: Any) -> bool:
    """A task's scores as `Scorer.score` gives them: a finite loss, a number or null metric."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    return isinstance(x, dict) and number(x.get("loss")) and (x.get("metric") is None or number(x["metric"]))


def read_base_scores(path: Path, tasks: list[str]) -> dict:
    """metrics/base.json, checked to hold a score of every task (MclError naming the file otherwise)."""
    return read_json_record(path, lambda d: isinstance(d, dict) and all(_is_score(d.get(t)) for t in tasks),
                            f"{{task: {{loss, metric}}}} for {', '.join(tasks)}",
                            "delete it and run again to rescore the base model")


def read_phase_scores(path: Path, tasks: list[str], views: tuple[str, ...]) -> dict:
    """metrics/phase-<k>.json, checked to hold every view's score of every task (MclError naming the file)."""
    def valid(d: Any) -> bool:
        return (isinstance(d, dict) and isinstance(d.get("tasks"), list) and all(isinstance(t, str) for t in d["tasks"])
                and isinstance(d.get("scores"), dict)
                and all(isinstance(d["scores"].get(v), dict) and all(_is_score(d["scores"][v].get(t)) for t in tasks)
                        for v in views))

    return read_json_record(path, valid, f"{{tasks, scores: {{view: {{task: {{loss, metric}}}}}}}} for views "
                                         f"{', '.join(views)}",
                            f"restore it, or delete {path.parent.parent} to start the run over")


def _write_csv(df: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp)


def write_metrics(run_dir: Path, tasks: list[str], n_phases: int, views: tuple[str, ...]) -> dict:
    """Assemble R matrices and summary.json from the per-phase score files."""
    mdir = run_dir / "metrics"
    base = read_base_scores(mdir / "base.json", tasks)
    phases = [read_phase_scores(mdir / f"phase-{k}.json", tasks, views) for k in range(n_phases)]
    rows = ["+".join(p["tasks"]) for p in phases]
    summary = {"tasks": tasks, "views": list(views), "primary_view": views[0]}
    for view in views:
        suffix = "" if view == views[0] else f"_{view}"
        # with several views each also has its own name (R_slow.csv beside R_fast.csv); R.csv is the primary
        suffixes = [suffix] + ([f"_{view}"] if len(views) > 1 and view == views[0] else [])
        loss = np.array([[p["scores"][view][t]["loss"] for t in tasks] for p in phases])
        for s in suffixes:
            _write_csv(pd.DataFrame(loss, index=rows, columns=tasks), mdir / f"R_loss{s}.csv")
        base_loss = np.array([base[t]["loss"] for t in tasks])
        summary[f"loss{suffix}"] = cl_metrics_loss(loss, base_loss)
        if all(p["scores"][view][t].get("metric") is not None for p in phases for t in tasks):
            R = np.array([[p["scores"][view][t]["metric"] for t in tasks] for p in phases])
            for s in suffixes:
                _write_csv(pd.DataFrame(R, index=rows, columns=tasks), mdir / f"R{s}.csv")
            summary[f"score{suffix}"] = cl_metrics(R, np.array([base[t]["metric"] for t in tasks]))
    summary["metric_names"] = {t: base[t].get("metric_name") for t in tasks}
    write_json_atomic(mdir / "summary.json", summary)
    return summary
