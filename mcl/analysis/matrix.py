"""Barrier matrix: the linear-path barrier between every pair of checkpoints (e.g. a run's per-task adapters)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mcl.adapters import AdapterState
from mcl.analysis.cache import PointCache
from mcl.analysis.sweep import path_barriers, sweep
from mcl.eval import TaskEvaluator
from mcl.paths import Linear


@dataclass
class BarrierMatrix:
    """Barriers of all checkpoint pairs: a long table (`barriers`) and the underlying sweeps (`curves`)."""

    labels: list[str]
    barriers: pd.DataFrame
    curves: pd.DataFrame

    def matrix(self, task: str, measure: str = "loss", metric: str = "max_minus_linear") -> pd.DataFrame:
        """labels × labels table of one barrier metric for one task (symmetric; 0 on the diagonal)."""
        n = len(self.labels)
        m = np.zeros((n, n))
        rows = self.barriers[(self.barriers.task == task) & (self.barriers.measure == measure)]
        for r in rows.itertuples():
            value = getattr(r, metric)
            m[r.i, r.j] = value
            m[r.j, r.i] = 1.0 - value if metric == "argmax_t" else value
        return pd.DataFrame(m, index=self.labels, columns=self.labels)


def barrier_matrix(
    checkpoints: Sequence[AdapterState],
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    points: int | Sequence[float] = 11,
    space: str = "factors",
    metric: bool = False,
    cache: PointCache | bool | None = True,
    labels: Sequence[str] | None = None,
    progress: bool = True,
) -> BarrierMatrix:
    """Sweep the linear path of every pair i < j of checkpoints and collect each task's barriers."""
    labels = list(labels or [c.label for c in checkpoints])
    records, curves = [], []
    pairs = list(combinations(range(len(checkpoints)), 2))
    for i, j in tqdm(pairs, desc="barrier matrix", disable=not progress):
        frame = sweep(Linear(checkpoints[i], checkpoints[j], space=space), model, tasks, points, metric, cache, progress=False)
        curves.append(frame.assign(i=i, j=j, a=labels[i], b=labels[j]))
        for task, result in path_barriers(frame).items():
            for measure, values in result["barrier"].items():
                if values is not None:
                    records.append({"i": i, "j": j, "a": labels[i], "b": labels[j], "task": task, "measure": measure, **values})
    return BarrierMatrix(labels, pd.DataFrame(records), pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())
