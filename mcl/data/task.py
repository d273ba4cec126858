"""Task formats: an `Example` is (prompt, answer); a `Task` is a named spec plus train/eval/test splits.

A task directory holds `train.json`, `eval.json`, `test.json` (TRACE style: a JSON list of
`{"prompt": ..., "answer": ...}` objects) or the same splits as `.jsonl` (one object per line), either
optionally gzipped (`train.json.gz`), and a `task.json` spec (`TaskSpec` fields: metric,
max_new_tokens, labels, ...). Without `task.json` a directory loads only when the caller names the
metric (`load_task_dir(dir, metric=...)`): a silent default metric would score TRACE tasks wrongly.
Splits load when first asked for, so a directory may hold only the splits a user needs. Every
malformed input raises `MclError` naming the file and the item index or line. Resolving built-in suite names lives in
`mcl.data.suite`; tokenisation in `mcl.data.tokenize`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from mcl.errors import MclError
from mcl.io import check_name, sha256_json

SPLITS = ("train", "eval", "test")
SPEC_FILE = "task.json"
SPLIT_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
TEMPLATE_DIR = Path(__file__).parent / "templates" / "trace"


@dataclass(frozen=True)
class Example:
    """One task example: the model sees `prompt` and is trained/scored on `answer`."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class TaskSpec:
    """What a task is scored with; stored as `task.json` beside the splits (all fields but name optional)."""

    name: str
    metric: str = "accuracy"
    max_new_tokens: int = 32
    labels: list[str] | None = None
    chance: float | None = None
    description: str = ""
    source: str = ""
    answer_format: str = ""

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object, without unset optional fields."""
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True, eq=False)
class Task:
    """A task: its spec, its directory (if any) and its splits (loaded on first use).

    `source` is how the user named it (a built-in name, or a dir as given); `builtin` marks the shipped suite.
    """

    spec: TaskSpec
    path: Path | None = None
    preloaded: dict[str, list[Example]] = field(default_factory=dict)
    source: str = ""
    builtin: bool = False

    @property
    def name(self) -> str:
        """The task's name."""
        return self.spec.name

    @property
    def metric(self) -> str:
        """Name of the task's metric (a key of `mcl.eval.metrics.METRICS`)."""
        return self.spec.metric

    def available_splits(self) -> list[str]:
        """The splits this task has, in train/eval/test order."""
        return [s for s in SPLITS if s in self.preloaded or (self.path and _split_file(self.path, s))]

    def split(self, name: str) -> list[Example]:
        """The examples of one split; MclError when the task has no such split."""
        if name not in self._cache:
            if name in self.preloaded:
                self._cache[name] = list(self.preloaded[name])
            elif self.path is not None and (f := _split_file(self.path, name)):
                self._cache[name] = read_examples(f)
            else:
                where = f"{self.path}/{name}.json (or .jsonl)" if self.path else f"task {self.name!r}"
                raise MclError(f"{where}: split {name!r} not found; this task has {self.available_splits()}")
        return self._cache[name]

    @cached_property
    def _cache(self) -> dict[str, list[Example]]:
        return {}

    def hash_parts(self) -> dict[str, Any]:
        """What the content hash covers: the metric, the generation length and each split's rows (hashed).

        Descriptions, sources, labels and chance levels change no result and are left out, so editing them
        keeps every run and checkpoint of the task.
        """
        return {"metric": self.spec.metric, "max_new_tokens": self.spec.max_new_tokens,
                "splits": {s: sha256_json([[e.prompt, e.answer] for e in self.split(s)]) for s in self.available_splits()}}

    @cached_property
    def hash(self) -> str:
        """Content hash of what changes results (`hash_parts`; stable across machines)."""
        return sha256_json(self.hash_parts())

    @cached_property
    def legacy_hash(self) -> str:
        """The hash before descriptions were left out (the whole spec and every split): older run dirs and
        checkpoint records resolve by it."""
        body = {s: [[e.prompt, e.answer] for e in self.split(s)] for s in self.available_splits()}
        return sha256_json({"spec": self.spec.to_json(), "splits": body})


def _split_file(task_dir: Path, split: str) -> Path | None:
    """The one file holding a split (None when absent); MclError when two files would hold it."""
    found = [f for ext in SPLIT_SUFFIXES if (f := task_dir / f"{split}{ext}").is_file()]
    if len(found) > 1:
        raise MclError(f"{task_dir}: {' and '.join(f.name for f in found)} both hold the {split} split; "
                       f"keep one (mcl would not know which to use)")
    return found[0] if found else None


def _example(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise MclError(f"{where}: expected an object with 'prompt' and 'answer', got {type(obj).__name__}")
    for key in ("prompt", "answer"):
        if key not in obj:
            raise MclError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], str):
            raise MclError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    return Example(obj["prompt"], obj["answer"])


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when its name ends in .gz; MclError when unreadable."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MclError(f"{path}: cannot read ({e})") from None


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Read a TRACE .json list or a .jsonl file (either may be gzipped) of {prompt, answer} objects."""
    path = Path(path)
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MclError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise MclError(f"{path}: empty file; expected {{prompt, answer}} examples")
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MclError(f"{path}: line {lineno}: malformed JSON ({e.msg})") from None
                out.append(_example(obj, f"{path}: line {lineno}"))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MclError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
        if not isinstance(data, list):
            raise MclError(f"{path}: expected a JSON list of {{prompt, answer}} objects, got {type(data).__name__}")
        out = [_example(obj, f"{path}: item {i}") for i, obj in enumerate(data)]
    if not out:
        raise MclError(f"{path}: no examples")
    return out


def trace_templates() -> list[str]:
    """Names of the shipped TRACE task.json templates (mcl/data/templates/trace)."""
    return sorted(f.stem for f in TEMPLATE_DIR.glob("*.json"))


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def matching_template(task_dir: Path) -> str | None:
    """The TRACE template named like `task_dir` (case, '-' and '_' ignored), if any."""
    return next((t for t in trace_templates() if _squash(t) == _squash(task_dir.name)), None)


def missing_spec_error(task_dir: Path) -> MclError:
    """The one-line error for a task dir without task.json: which template to copy, or how to name a metric."""
    hint = f"or name the metric: {task_dir}:METRIC"
    if (t := matching_template(task_dir)) is not None:
        return MclError(f"{task_dir}: no {SPEC_FILE}; copy the TRACE template: mcl data template {t} {task_dir} ({hint})")
    return MclError(f"{task_dir}: no {SPEC_FILE} (metric, generation length); write one, copy a TRACE template "
                    f"(mcl data template NAME {task_dir}; NAME: {', '.join(trace_templates())}) {hint}")


def read_spec(task_dir: Path, metric: str | None = None) -> TaskSpec:
    """The spec in `task_dir/task.json`; without one, defaults with the explicitly given `metric` (else MclError)."""
    f = task_dir / SPEC_FILE
    if not f.is_file():
        if metric is None:
            raise missing_spec_error(task_dir)
        spec = TaskSpec(name=check_name(task_dir.name or task_dir.resolve().name, f"{task_dir}: task name"), metric=metric)
        _check_spec(spec, task_dir)
        return spec
    try:
        obj = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MclError(f"{f}: malformed JSON ({e})") from None
    if not isinstance(obj, dict):
        raise MclError(f"{f}: expected a JSON object")
    known = {fl.name for fl in fields(TaskSpec)}
    if unknown := sorted(set(obj) - known):
        raise MclError(f"{f}: unknown key(s) {unknown}; known: {sorted(known)}")
    spec = TaskSpec(**{"name": task_dir.name, **obj})
    check_name(spec.name, f"{f}: task name")
    _check_spec(spec, f)
    return spec


def _check_spec(spec: TaskSpec, where: Path) -> None:
    from mcl.eval.metrics import METRICS  # leaf module: metric names only

    if not isinstance(spec.name, str) or not spec.name:
        raise MclError(f"{where}: name must be a non-empty string")
    if spec.metric not in METRICS:
        raise MclError(f"{where}: unknown metric {spec.metric!r}; known: {', '.join(METRICS)}")
    if isinstance(spec.max_new_tokens, bool) or not isinstance(spec.max_new_tokens, int) or spec.max_new_tokens < 1:
        raise MclError(f"{where}: max_new_tokens must be a positive integer (got {spec.max_new_tokens!r})")
    if spec.labels is not None and not (isinstance(spec.labels, list) and all(isinstance(x, str) for x in spec.labels)):
        raise MclError(f"{where}: labels must be a list of strings")
    if spec.chance is not None and (isinstance(spec.chance, bool) or not isinstance(spec.chance, (int, float))
                                    or not 0 <= spec.chance <= 1):
        raise MclError(f"{where}: chance must be a number in [0, 1], a score of the metric (got {spec.chance!r})")


def load_task_dir(task_dir: str | os.PathLike, metric: str | None = None) -> Task:
    """Load a task directory (splits are read when first used); MclError if it holds no split or no spec.

    `metric` scores a directory without task.json (ignored when task.json exists).
    """
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise MclError(f"{task_dir}: not a task directory")
    if not any(_split_file(task_dir, s) for s in SPLITS):
        raise MclError(f"{task_dir}: no split files; expected train/eval/test .json or .jsonl (optionally .gz)")
    return Task(read_spec(task_dir, metric), task_dir)
