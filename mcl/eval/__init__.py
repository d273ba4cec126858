"""Evaluation: teacher-forced answer loss, batched greedy generation and task metrics.

- `loss`: `LossEvaluator` (prepared once, LM head only at label positions), `label_token_losses`
- `generate`: `greedy_generate` (left-padded, KV-cached, stops at eos)
- `metrics`: the metric registry `METRICS` and `chance_level`
- `evaluate`: `TaskEvaluator` and `evaluate_task` (loss + metric of a task split)
"""

from mcl.eval.evaluate import TaskEvaluator, evaluate_task
from mcl.eval.generate import greedy_generate
from mcl.eval.loss import LossEvaluator, label_token_losses
from mcl.eval.metrics import METRICS, Metric, chance_level, get_metric

__all__ = [
    "METRICS", "LossEvaluator", "Metric", "TaskEvaluator", "chance_level", "evaluate_task", "get_metric",
    "greedy_generate", "label_token_losses",
]
