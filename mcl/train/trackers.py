"""What a run sends to its tracker (`train.log_with`: TensorBoard, W&B, any accelerate tracker).

Every `log_every` steps the loop logs the step's loss, learning rate and the method's loss terms (ER and
I-LoRA: `ce_cur`, `ce_buf`; I-LoRA also `consistency` and `slow_fast_dist`, ‖slow − fast‖). After each task,
`task_end_values` adds every task's score and loss, OP/BWT/forgetting over the tasks seen so far, and the
method's terms as the task ends — all at the optimizer step where the task ended (steps count across the
run, so the x axis is monotone for every tracker); the phase is that step, never a logged value.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mcl.train.metrics import cl_metrics, cl_metrics_loss
from mcl.train.scoring import read_phase_scores


def step_values(row: dict[str, float]) -> dict[str, float]:
    """A train_log.csv row as tracker values: `train/<key>`, without its phase and step (those are the x axis)."""
    return {f"train/{k}": v for k, v in row.items() if k not in ("phase", "step")}


def task_end_values(run_dir: Path, tasks: list[str], phase: int, views: tuple[str, ...],
                    method_values: dict[str, float]) -> dict[str, float]:
    """Scores and losses of every task, CL metrics over the tasks seen so far and the method's terms, after `phase`.

    Tags: `eval/<task>/score|loss` (`eval_<view>/...` for a method's further views, e.g. I-LoRA's fast
    learner), `cl/score_OP|BWT|forgetting`, `cl/loss_OP|BWT|forgetting`, `task_end/<term>`.
    """
    phases = [read_phase_scores(run_dir / "metrics" / f"phase-{k}.json", tasks, views) for k in range(phase + 1)]
    seen = list(dict.fromkeys(t for p in phases for t in p["tasks"]))
    out: dict[str, float] = {}
    for view in views:
        prefix = "eval" if view == views[0] else f"eval_{view}"
        cl = "cl" if view == views[0] else f"cl_{view}"
        now = phases[-1]["scores"][view]
        for task in tasks:
            out[f"{prefix}/{task}/loss"] = now[task]["loss"]
            if now[task].get("metric") is not None:
                out[f"{prefix}/{task}/score"] = now[task]["metric"]
        loss = np.array([[p["scores"][view][t]["loss"] for t in seen] for p in phases])
        metrics = {f"loss_{k}": v for k, v in cl_metrics_loss(loss).items() if k != "FWT"}
        if all(p["scores"][view][t].get("metric") is not None for p in phases for t in seen):
            R = np.array([[p["scores"][view][t]["metric"] for t in seen] for p in phases])
            metrics |= {f"score_{k}": v for k, v in cl_metrics(R).items() if k != "FWT"}
        out |= {f"{cl}/{k}": v for k, v in metrics.items() if math.isfinite(v)}
    out |= {f"task_end/{k}": v for k, v in method_values.items()}
    return out
