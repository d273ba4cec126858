"""Resolve task names and paths: a directory, a built-in suite task name, or `mcl-suite` for all eight."""

from __future__ import annotations

import os
from pathlib import Path

from mcl.data.suite import SUITE, SUITE_NAME, ensure_suite
from mcl.data.task import Task, load_task_dir
from mcl.errors import MclError


def load_task(name_or_path: str | os.PathLike) -> Task:
    """A task from a TRACE-format dir, or a built-in suite task by name (suite built on first use)."""
    s = str(name_or_path)
    if Path(s).expanduser().is_dir():
        return load_task_dir(Path(s).expanduser())
    name = s.removeprefix(f"{SUITE_NAME}/")
    if name in SUITE:
        return load_task_dir(ensure_suite() / name)
    raise MclError(
        f"unknown task {s!r}: not a task directory, nor a built-in task ({', '.join(SUITE)}; {SUITE_NAME} = all)"
    )


def load_tasks(names: list[str]) -> list[Task]:
    """Load several tasks; the name `mcl-suite` expands to every built-in task in suite order."""
    expanded = [n for name in names for n in (list(SUITE) if name == SUITE_NAME else [name])]
    return [load_task(n) for n in expanded]
