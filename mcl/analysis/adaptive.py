"""Adaptive barrier search: a coarse grid, then a bounded scalar search for the peak above the chord.

`adaptive_sweep(path, model, tasks)` returns a sweep frame like `sweep` (one row per (t, task)), but the
t values differ per task: every task is scored on a shared coarse grid, then each task's own curve is
refined inside the bracket around its highest coarse point above the chord v(0)→v(1), with
`scipy.optimize.minimize_scalar(method="bounded")` (Brent's golden-section/parabolic search), until the
bracket is narrower than `xtol` in t or the task has used `max_points` evaluations. Refinement points
are scored for their task only, so a task costs at most `max_points` forward sweeps over its data.
The model is bound once for the whole search (with `merged`, as W0 + ΔW(t): see mcl.paths.merged_forward);
cached points are reused as in `sweep`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mcl.analysis.cache import PointCache
from mcl.analysis.sweep import _model_key, PointJob, evaluate_points, t_grid
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.paths import Binding, InterpolationPath
from mcl.paths.merged_forward import bind_for_forward


@dataclass(frozen=True)
class AdaptiveSearch:
    """Settings of the adaptive search: coarse grid size, evaluation budget per task, t tolerance."""

    coarse: int = 7
    max_points: int = 15
    xtol: float = 2e-3

    def __post_init__(self) -> None:
        if self.coarse < 3:
            raise MclError(f"the adaptive search needs a coarse grid of at least 3 points, got {self.coarse}")
        if self.max_points < self.coarse:
            raise MclError(f"max_points ({self.max_points}) must be at least the coarse grid ({self.coarse})")
        if not 0.0 < self.xtol < 0.5:
            raise MclError(f"xtol must lie in (0, 0.5), got {self.xtol}")


def refine_peak(f: Callable[[float], float], t: Sequence[float], v: Sequence[float], budget: int,
                xtol: float) -> dict[float, float]:
    """New points {t: v} that refine the highest interior point of v above its chord (at most `budget` calls of f)."""
    from scipy.optimize import minimize_scalar

    t, v = np.asarray(t, dtype=float), np.asarray(v, dtype=float)
    above = v - ((1.0 - t) * v[0] + t * v[-1])
    k = int(np.argmax(above[1:-1])) + 1
    if budget <= 0 or above[k] <= 0.0:  # curve at or below the chord on the grid: the barrier is 0
        return {}
    known, new = dict(zip(t.tolist(), v.tolist())), {}

    def negative_above(x: float) -> float:
        x = float(x)
        if x not in known:
            if len(new) >= budget:
                return -float(above[k])  # budget spent: report the known peak so the search ends without new calls
            known[x] = new[x] = f(x)
        return -(known[x] - ((1.0 - x) * v[0] + x * v[-1]))

    minimize_scalar(negative_above, bounds=(t[k - 1], t[k + 1]), method="bounded",
                    options={"xatol": xtol, "maxiter": budget})
    return new


class _HeldBinding:
    """A binding opened on first use and kept open across `evaluate_points` calls (the caller closes it)."""

    def __init__(self, open_binding: Callable[[], Binding]):
        self._open, self.binding = open_binding, None

    def __call__(self) -> "_HeldBinding":
        return self

    def __enter__(self) -> Binding:
        if self.binding is None:
            self.binding = self._open()
        return self.binding

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        """Close the underlying binding, if it was opened."""
        if self.binding is not None:
            self.binding.close()


def adaptive_sweep(
    path: InterpolationPath,
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    search: AdaptiveSearch | None = None,
    metric: bool = False,
    cache: PointCache | bool | None = True,
    progress: bool = False,
    per_example: bool = False,
    merged: bool = False,
) -> pd.DataFrame:
    """A sweep frame whose t values per task locate that task's loss barrier (see the module docstring)."""
    search = search or AdaptiveSearch()
    spec = path.spec()
    cache = PointCache() if cache is True else cache or None
    fingerprint = _model_key(model) if cache else None

    def job(t: float) -> PointJob:
        return PointJob({**spec, "t": round(t, 12)}, lambda: path.point(t),
                        {"t": t, "path": path.name, "space": path.space.name})

    with ExitStack() as stack:
        held = _HeldBinding(lambda: bind_for_forward(path, model, merged))
        stack.callback(held.close)

        def score(jobs: list[PointJob], on: Sequence[TaskEvaluator]) -> pd.DataFrame:
            return evaluate_points(jobs, held, model, on, metric, cache, progress=False, fingerprint=fingerprint,
                                   per_example=per_example)

        coarse = score([job(t) for t in t_grid(search.coarse)], tasks)
        frames = [coarse]
        for task in tasks:
            rows = coarse[coarse.task == task.task.name].sort_values("t")
            extra: list[pd.DataFrame] = []

            def loss_at(t: float, task=task, extra=extra) -> float:
                frame = score([job(t)], [task])
                extra.append(frame)
                return float(frame["loss"].iloc[0])

            refine_peak(loss_at, rows["t"].tolist(), rows["loss"].tolist(), search.max_points - search.coarse, search.xtol)
            frames.extend(extra)
    frame = pd.concat(frames, ignore_index=True).sort_values(["task", "t"], kind="stable", ignore_index=True)
    computed = sum(f.attrs.get("computed", 0) for f in frames)
    frame.attrs.update(computed=computed, cached=len(frame) - computed, search=vars(search).copy())
    return frame
