"""Barrier metrics (a registry, by name) on a curve v(t) sampled at 0 = t₀ < … < t_K = 1.

- `max_minus_linear` = max_t [v(t) − ((1−t)·v(0) + t·v(1))]   (Frankle et al. 2020; Entezari et al. 2022)
- `max_minus_mean`   = max_t v(t) − (v(0) + v(1))/2
- `integral`         = ∫ v(t) dt − (v(0) + v(1))/2              (trapezoid rule on the grid)
- `argmax_t`         = the t at which v(t) rises furthest above the chord
Values are "lower is better" (a loss). For a higher-is-better score, `barriers(..., higher_is_better=True)`
negates it first, so a barrier is always reported as a positive drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mcl.errors import MclError


@dataclass(frozen=True)
class BarrierMetric:
    """A named summary of a curve v(t) (lower-is-better values) on a grid from 0 to 1."""

    name: str
    description: str
    fn: Callable[[np.ndarray, np.ndarray], float]

    def __call__(self, t: np.ndarray, v: np.ndarray) -> float:
        """The metric's value on the curve."""
        return float(self.fn(t, v))


def _above_chord(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    return v - ((1.0 - t) * v[0] + t * v[-1])


BARRIER_METRICS: dict[str, BarrierMetric] = {
    m.name: m
    for m in [
        BarrierMetric("max_minus_linear", "max over t of v(t) minus the chord between the endpoints",
                      lambda t, v: _above_chord(t, v).max()),
        BarrierMetric("max_minus_mean", "max over t of v(t) minus the endpoints' mean",
                      lambda t, v: v.max() - (v[0] + v[-1]) / 2),
        BarrierMetric("integral", "trapezoid integral of v over [0, 1] minus the endpoints' mean",
                      lambda t, v: np.trapezoid(v, t) - (v[0] + v[-1]) / 2),
        BarrierMetric("argmax_t", "the t where v(t) is highest above the chord", lambda t, v: t[_above_chord(t, v).argmax()]),
    ]
}


def barriers(t: Sequence[float], values: Sequence[float], higher_is_better: bool = False) -> dict[str, float]:
    """Every registered barrier metric of one curve (values negated first when higher is better)."""
    t, v = np.asarray(t, dtype=float), np.asarray(values, dtype=float)
    if t.ndim != 1 or len(t) < 2 or len(t) != len(v):
        raise MclError(f"a barrier needs at least 2 points with one value each, got {len(t)} t and {len(v)} values")
    if t[0] != 0.0 or t[-1] != 1.0 or np.any(np.diff(t) <= 0):
        raise MclError("barrier grid must increase strictly from t=0 to t=1")
    if not np.all(np.isfinite(v)):
        raise MclError("curve has non-finite values; cannot compute a barrier")
    v = -v if higher_is_better else v
    return {name: metric(t, v) for name, metric in BARRIER_METRICS.items()}
