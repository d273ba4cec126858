"""Barrier matrix: the linear-path barrier between every pair of checkpoints (e.g. a run's per-task adapters).

Each checkpoint is scored once: a pair's endpoints t = 0 and t = 1 are the checkpoints themselves (every
space gives them exactly), so the first pair that holds a checkpoint scores it and later pairs reuse
those rows (marked `cached`); N checkpoints on K points cost N + pairs × (K − 2) point evaluations.
"""

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
from mcl.analysis.sweep import path_barriers, sweep, t_grid
from mcl.eval import TaskEvaluator
from mcl.paths import Linear


@dataclass
class BarrierMatrix:
    """Barriers of all checkpoint pairs: a long table (`barriers`) and the underlying sweeps (`curves`)."""

    labels: list[str]
    barriers: pd.DataFrame
    curves: pd.DataFrame
    evaluations: int = 0  # (point, task) scores computed (not from the sweep cache, not shared endpoints)

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
    """Sweep the linear path of every pair i < j of checkpoints and collect each task's barriers.

    Each checkpoint's endpoint rows are computed once, by the first pair that holds it, and reused after.
    """
    from mcl.analysis.distributed import ranks

    labels = list(labels or [c.label for c in checkpoints])
    grid = t_grid(points)
    records, curves, evaluations = [], [], 0
    scored: dict[int, pd.DataFrame] = {}  # checkpoint -> its rows (one per task) from the pair that scored it
    pairs = list(combinations(range(len(checkpoints)), 2))
    for i, j in tqdm(pairs, desc="barrier matrix", disable=not (progress and ranks().main)):
        path = Linear(checkpoints[i], checkpoints[j], space=space)
        ends = {t: k for t, k in ((0.0, i), (1.0, j)) if t in grid}
        todo = [t for t in grid if ends.get(t) not in scored]
        parts = [sweep(path, model, tasks, todo, metric, cache, progress=False)] if todo else []
        evaluations += sum(p.attrs.get("computed", 0) for p in parts)
        for t, k in ends.items():
            if k in scored:
                parts.append(scored[k].assign(t=t, path=path.name, space=path.space.name, cached=True))
            else:
                scored[k] = parts[0][parts[0].t == t]
        frame = pd.concat(parts, ignore_index=True).sort_values("t", kind="stable", ignore_index=True)
        curves.append(frame.assign(i=i, j=j, a=labels[i], b=labels[j]))
        for task, result in path_barriers(frame).items():
            for measure, values in result["barrier"].items():
                if values is not None:
                    records.append({"i": i, "j": j, "a": labels[i], "b": labels[j], "task": task, "measure": measure, **values})
    curves_frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return BarrierMatrix(labels, pd.DataFrame(records), curves_frame, evaluations)
