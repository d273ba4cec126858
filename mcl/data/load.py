"""Resolve task names and paths, and record/re-find the exact data a checkpoint was trained on.

A task is named by a TRACE-format dir, `DIR:METRIC` (a dir without task.json, scored with METRIC), a
built-in suite task name, or `mcl-suite` for all eight (a dir wins over a built-in name). Commands that
score no metric read a dir without task.json as it is (metric `none`). `task_record`
is what a checkpoint's mcl.json keeps about each task (name, the source as given, the absolute dir,
content hash); `load_recorded` finds that data again and refuses data that is gone or has changed.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from mcl.data.suite import SUITE, SUITE_NAME, ensure_suite
from mcl.data.task import Task, load_task_dir
from mcl.errors import MclError


def _split_metric(s: str) -> tuple[Path, str | None]:
    """`DIR:METRIC` (METRIC a known metric name) -> (DIR, METRIC); anything else -> (s, None)."""
    from mcl.eval.metrics import METRICS  # leaf module: metric names only

    head, sep, metric = s.rpartition(":")
    if sep and head and metric in METRICS and not Path(s).expanduser().is_dir():
        return Path(head).expanduser(), metric
    return Path(s).expanduser(), None


def _dir_and_metric(s: str) -> tuple[Path, str | None] | None:
    """(dir, metric) when `s` names a directory, or `DIR:METRIC` with a known metric; else None."""
    path, metric = _split_metric(s)
    return (path, metric) if path.is_dir() else None


def load_builtin(name: str) -> Task:
    """A built-in suite task by name (the shipped copy), never a directory of that name."""
    name = name.removeprefix(f"{SUITE_NAME}/")
    if name not in SUITE:
        raise MclError(f"unknown built-in task {name!r}; built-in: {', '.join(SUITE)}")
    return replace(load_task_dir(ensure_suite() / name), source=name, builtin=True)


def load_task(name_or_path: str | os.PathLike | Task, loss_only: bool = False) -> Task:
    """A task from a TRACE-format dir (or `DIR:METRIC`), or a built-in suite task by name.

    `loss_only` (commands that score no metric): a dir without task.json loads with the metric `none`.
    """
    if isinstance(name_or_path, Task):
        return name_or_path
    s = str(name_or_path)
    if (found := _dir_and_metric(s)) is not None:
        metric = found[1] or ("none" if loss_only else None)
        return replace(load_task_dir(found[0], metric=metric), source=s)
    if s.removeprefix(f"{SUITE_NAME}/") in SUITE:
        return load_builtin(s)
    raise MclError(
        f"unknown task {s!r}: not a task directory, nor a built-in task ({', '.join(SUITE)}; {SUITE_NAME} = all)"
    )


def load_tasks(names: list[str | Task], loss_only: bool = False) -> list[Task]:
    """Load several tasks (Task objects pass through); `mcl-suite` expands to every built-in task in suite order."""
    expanded = [n for name in names for n in (list(SUITE) if name == SUITE_NAME else [name])]
    return [load_task(n, loss_only) for n in expanded]


def task_record(task: Task) -> dict[str, Any]:
    """What a checkpoint records about a task: name, source as given, absolute dir (None if built-in), hash and the
    parts the hash covers (so a later change can be named)."""
    path = None if task.builtin or task.path is None else str(task.path.resolve())
    return {"name": task.name, "source": task.source or task.name, "dir": path, "hash": task.hash,
            "parts": task.hash_parts()}


def describe_change(recorded: Any, task: Task) -> str:
    """What differs between a record's hash parts and the task's now (records from before parts: "its content")."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("splits"), dict):
        return "its content"
    now = task.hash_parts()
    changes = [f"{k} {recorded.get(k)!r} → {now[k]!r}" for k in ("metric", "max_new_tokens") if recorded.get(k) != now[k]]
    old, new = recorded["splits"], now["splits"]
    for split in sorted(set(old) | set(new)):
        if old.get(split) != new.get(split):
            state = "added" if split not in old else "removed" if split not in new else "rows changed"
            changes.append(f"split {split} {state}")
    return ", ".join(changes) or "its content"


def load_recorded(record: dict[str, Any], where: str = "the checkpoint") -> Task:
    """The task a record names, checked to hold the same content (new or legacy hash); MclError when gone or changed."""
    if not (isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("name", "source", "hash"))):
        raise MclError(f"{where}: malformed task record in mcl.json ({record!r:.80}); pass --tasks TASK ...")
    name, source = record["name"], record["source"]
    if record.get("dir") is None:
        task = load_builtin(source)
    else:
        given, metric = _split_metric(source)
        found = next((d for d in (Path(record["dir"]), given) if d.is_dir()), None)
        if found is None:
            raise MclError(f"task {name}: its data dir {record['dir']} is gone (recorded in {where}); "
                           f"restore it or pass --tasks DIR ... to score other data")
        task = replace(load_task_dir(found, metric=metric), source=source)
    if record["hash"] not in (task.hash, task.legacy_hash):
        raise MclError(f"task {name}: the data at {task.path} changed since {where} was trained "
                       f"({describe_change(record.get('parts'), task)}); pass --tasks DIR ... to score it anyway")
    return task
