"""Continual LoRA training: one loop, a registry of methods, per-task checkpoints and CL metrics.

Public API: `load_config` / `RunConfig` (the run description `mcl train` reads), `train(cfg)` → run
dir, `resolve_run_dir(cfg)`, `report(run_dirs, out_dir)`, `read_run` + `heatmap_figure` (R heatmaps), `task_dirs(run_dir)` (per-task checkpoints in order),
and the method registry `METHODS`.
They load on first use, so importing `mcl.train` stays cheap. The package itself is callable:
`mcl.train(CONFIG, "key=value", ...)` runs `mcl.api.train` (the top-level API's name for a run).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "RunConfig": "mcl.train.config", "load_config": "mcl.train.config", "train": "mcl.train.loop",
    "resolve_run_dir": "mcl.train.loop", "report": "mcl.train.report", "read_run": "mcl.train.report",
    "heatmap_figure": "mcl.train.report", "METHODS": "mcl.train.methods", "task_dirs": "mcl.train.records",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


class _CallableModule(types.ModuleType):
    """`mcl.train(...)` is both this package and the top-level API's run function (`mcl.api.train`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mcl.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
