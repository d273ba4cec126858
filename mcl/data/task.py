"""Task formats: an `Example` is (prompt, answer); a `Task` is a named spec plus train/eval/test splits.

A task directory holds `train.json`, `eval.json`, `test.json` (TRACE style: a JSON list of
`{"prompt": ..., "answer": ...}` objects) or the same splits as `.jsonl` (one object per line), and an
optional `task.json` spec (`TaskSpec` fields: metric, max_new_tokens, labels, ...). Splits load when
first asked for, so a directory may hold only the splits a user needs. Every malformed input raises
`MclError` naming the file and the item index or line. Resolving built-in suite names lives in
`mcl.data.suite`; tokenisation in `mcl.data.tokenize`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from mcl.errors import MclError
from mcl.io import check_name, sha256_json

SPLITS = ("train", "eval", "test")
SPEC_FILE = "task.json"


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
    """A task: its spec, its directory (if any) and its splits (loaded on first use)."""

    spec: TaskSpec
    path: Path | None = None
    preloaded: dict[str, list[Example]] = field(default_factory=dict)

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

    @cached_property
    def hash(self) -> str:
        """Content hash of the spec and every available split (stable across machines)."""
        body = {s: [[e.prompt, e.answer] for e in self.split(s)] for s in self.available_splits()}
        return sha256_json({"spec": self.spec.to_json(), "splits": body})


def _split_file(task_dir: Path, split: str) -> Path | None:
    for ext in (".json", ".jsonl"):
        f = task_dir / f"{split}{ext}"
        if f.is_file():
            return f
    return None


def _example(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise MclError(f"{where}: expected an object with 'prompt' and 'answer', got {type(obj).__name__}")
    for key in ("prompt", "answer"):
        if key not in obj:
            raise MclError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], str):
            raise MclError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    return Example(obj["prompt"], obj["answer"])


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Read a TRACE .json list or a .jsonl file of {prompt, answer} objects; MclError on bad input."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MclError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise MclError(f"{path}: empty file; expected {{prompt, answer}} examples")
    if path.suffix == ".jsonl":
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


def read_spec(task_dir: Path) -> TaskSpec:
    """The spec in `task_dir/task.json`, or defaults named after the directory when absent."""
    f = task_dir / SPEC_FILE
    if not f.is_file():
        return TaskSpec(name=check_name(task_dir.name or task_dir.resolve().name, f"{task_dir}: task name"))
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

    if spec.metric not in METRICS:
        raise MclError(f"{where}: unknown metric {spec.metric!r}; known: {', '.join(METRICS)}")
    if not isinstance(spec.max_new_tokens, int) or spec.max_new_tokens < 1:
        raise MclError(f"{where}: max_new_tokens must be a positive integer")
    if spec.labels is not None and not (isinstance(spec.labels, list) and all(isinstance(x, str) for x in spec.labels)):
        raise MclError(f"{where}: labels must be a list of strings")
    if spec.chance is not None and not isinstance(spec.chance, (int, float)):
        raise MclError(f"{where}: chance must be a number")


def load_task_dir(task_dir: str | os.PathLike) -> Task:
    """Load a task directory (splits are read when first used); MclError if it holds no split."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise MclError(f"{task_dir}: not a task directory")
    task = Task(read_spec(task_dir), task_dir)
    if not task.available_splits():
        raise MclError(f"{task_dir}: no split files; expected train/eval/test .json or .jsonl")
    return task
