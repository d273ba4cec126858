"""mcl: mode-connectivity analysis and continual LoRA training (incl. I-LoRA) for causal LMs.

The top level is a five-line API (`mcl.api`): `mcl.train(CONFIG, "key=value", ...)` → run dir,
`mcl.barrier(a, b, tasks=...)` → barriers per task, `mcl.plane(a, b, c, ...)` → a scored plane. Names load on
first use, so `import mcl` imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "barrier", "plane", "train"]


def __getattr__(name: str) -> Any:
    if name in ("barrier", "plane"):
        return getattr(importlib.import_module("mcl.api"), name)
    if name == "train":  # the subpackage, callable as mcl.api.train (see mcl/train/__init__.py)
        return importlib.import_module("mcl.train")
    raise AttributeError(f"module 'mcl' has no attribute {name!r}")
