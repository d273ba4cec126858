"""Evaluation: teacher-forced answer loss, batched greedy generation and task metrics.

- `loss`: `LossEvaluator` (prepared once, LM head only at label positions), `label_token_losses`
- `generate`: `greedy_generate` (left-padded, KV-cached, stops at eos)
- `metrics`: the metric registry `METRICS` and `chance_level`
- `evaluate`: `TaskEvaluator` and `evaluate_task` (loss + metric of a task split)
- `sari`: SARI for simplification tasks (stand-alone, stdlib only)

Names load lazily (PEP 562): `mcl.eval.metrics` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TaskEvaluator": "evaluate", "evaluate_task": "evaluate", "greedy_generate": "generate",
    "LossEvaluator": "loss", "label_token_losses": "loss",
    "METRICS": "metrics", "Metric": "metrics", "chance_level": "metrics", "get_metric": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mcl.eval.{_EXPORTS[name]}"), name)
