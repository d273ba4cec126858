"""Adaptive barrier search: a coarse grid, then parabolic refinement of the two highest bumps above the chord.

`search_barrier(f, search)` finds the loss barrier (the highest rise of v(t) above the chord v(0)→v(1))
of one curve with few calls of f:
1. A coarse grid (`coarse` points). When its highest rise above the chord is at most `flat` of the curve's
   range (flat against the chord, or below it), the midpoints are added: a grid of 2·coarse − 1 points.
2. The two highest local maxima of the rise ("bumps") are refined in turn. Each gets the top of the
   parabola through its best point and that point's neighbours at least once; it is settled when the
   next parabola predicts that the barrier would rise by less than `rtol` (relative) AND both neighbours
   of its best point rise at least half as high (the top is bracketed within its half-height width;
   a neighbour lower than that gets a point halfway to it). `max_points` calls in all, coarse included.
3. The answer is *resolved* unless the evidence is thin, and then says why: no point rose above the
   chord by more than float rounding (`NOISE` of the endpoint values; a peak narrower than the grid
   spacing would not show), the highest point is not bracketed within its half height (a single-point
   bump: the peak may be higher), or the budget ran out first.
A peak that shows at no evaluated point cannot be seen by any sampler; the search refines what shows.

`adaptive_sweep(path, model, tasks)` returns a sweep frame like `sweep` (one row per (t, task)), but the
t values differ per task: every task is scored on the shared coarse grid, then `search_barrier` runs per
task on that task alone, so a task costs at most `max_points` forward sweeps over its data. The model is
bound once for the whole search (with `merged`, as W0 + ΔW(t): see mcl.paths.merged_forward); cached
points are reused as in `sweep`. `frame.attrs["resolved"]` holds each task's verdict.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch

from mcl.analysis.cache import PointCache
from mcl.analysis.sweep import _model_key, PointJob, evaluate_points, t_grid
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.paths import Binding, InterpolationPath
from mcl.paths.merged_forward import bind_for_forward, forward_spec


NOISE = 1e-6  # rises below this fraction of the endpoint values are float rounding, not a barrier


@dataclass(frozen=True)
class AdaptiveSearch:
    """Settings of the adaptive search: coarse grid, evaluation budget per task, stop tolerance, flatness."""

    coarse: int = 7
    max_points: int = 15
    rtol: float = 0.01
    flat: float = 0.05

    def __post_init__(self) -> None:
        if self.coarse < 3:
            raise MclError(f"the adaptive search needs a coarse grid of at least 3 points, got {self.coarse}")
        if self.max_points < self.coarse:
            raise MclError(f"max_points ({self.max_points}) must be at least the coarse grid ({self.coarse})")
        if not 0.0 < self.rtol < 0.5:
            raise MclError(f"rtol must lie in (0, 0.5), got {self.rtol}")
        if not 0.0 <= self.flat < 1.0:
            raise MclError(f"flat must lie in [0, 1), got {self.flat}")


@dataclass
class BarrierSearch:
    """One curve's search: the evaluated (t, v) in evaluation order and whether the barrier is sure (else why)."""

    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    resolved: bool = True
    reason: str | None = None


class _Curve:
    """Evaluated points of one curve, in evaluation order, with its chord and a call budget."""

    def __init__(self, f: Callable[[float], float], budget: int, known: dict[float, float]):
        self.f, self.budget, self.values, self.order = f, budget, dict(known), list(known)

    def add(self, t: float) -> bool:
        """Evaluate f at t (once); False when the budget is spent."""
        if t in self.values:
            return True
        if len(self.values) >= self.budget:
            return False
        self.values[t] = float(self.f(t))
        self.order.append(t)
        return True

    def rise(self, t: float) -> float:
        """v(t) above the chord through v(0) and v(1)."""
        return self.values[t] - ((1.0 - t) * self.values[0.0] + t * self.values[1.0])

    def barrier(self) -> float:
        """The highest rise above the chord so far (0 when none rises)."""
        return max(0.0, max(self.rise(t) for t in self.values))

    def neighbours(self, t: float) -> tuple[float, float]:
        """The evaluated points just below and just above an interior t."""
        ts = sorted(self.values)
        i = ts.index(t)
        return ts[i - 1], ts[i + 1]

    def low_neighbour(self, t: float) -> float | None:
        """A neighbour of t that rises less than half as high as t (the farther one), else None."""
        low = [n for n in self.neighbours(t) if self.rise(n) < 0.5 * self.rise(t)]
        return max(low, key=lambda n: abs(n - t)) if low else None

    def best_between(self, lo: float, hi: float) -> float:
        """The evaluated t strictly between lo and hi that rises highest."""
        return max((t for t in self.values if lo < t < hi), key=self.rise)


def _vertex(x: tuple[float, float, float], y: tuple[float, float, float]) -> tuple[float, float]:
    """The top (t, value) of the parabola through three points whose middle one is highest."""
    (a, b, c), (fa, fb, fc) = x, y
    den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
    if den <= 0.0:  # flat: no parabola with a top
        return b, fb
    t = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
    top = (fa * (t - b) * (t - c) / ((a - b) * (a - c)) + fb * (t - a) * (t - c) / ((b - a) * (b - c))
           + fc * (t - a) * (t - b) / ((c - a) * (c - b)))
    return t, top


def _refine(curve: _Curve, t: float, rtol: float) -> bool:
    """Refine the bump at t until it is settled (module docstring, step 2); False if the budget ran out first."""
    tried = False
    while True:
        lo, hi = curve.neighbours(t)
        if hi - lo < 1e-9:
            return True
        x, top = _vertex((lo, t, hi), (curve.rise(lo), curve.rise(t), curve.rise(hi)))
        if tried and top - curve.rise(t) <= rtol * curve.barrier():
            low = curve.low_neighbour(t)
            if low is None:
                return True
            x = (t + low) / 2
        else:
            gap = 0.05 * (hi - lo)  # keep the new point off the known ones
            x = min(max(x, lo + gap), hi - gap)
            if abs(x - t) < gap:
                x = t + gap if hi - t > t - lo else t - gap
        if not curve.add(x):
            return False
        tried, t = True, curve.best_between(lo, hi)


def _bumps(curve: _Curve, noise: float) -> list[float]:
    """Interior local maxima of the rise above the chord that rise above it by more than `noise`, highest first."""
    ts = sorted(curve.values)
    rise = [curve.rise(t) for t in ts]
    peaks = [ts[i] for i in range(1, len(ts) - 1)
             if rise[i] > noise and rise[i] >= rise[i - 1] and rise[i] >= rise[i + 1]]
    return sorted(peaks, key=curve.rise, reverse=True)


def search_barrier(f: Callable[[float], float], search: AdaptiveSearch | None = None,
                   known: dict[float, float] | None = None) -> BarrierSearch:
    """Locate the loss barrier of the curve f on [0, 1] (see the module docstring); `known` are values already had."""
    search = search or AdaptiveSearch()
    coarse = t_grid(search.coarse)
    curve = _Curve(f, search.max_points, {t: v for t, v in (known or {}).items() if t in coarse})
    for t in coarse:
        curve.add(t)
    values = [curve.values[t] for t in coarse]
    noise = NOISE * max(abs(values[0]), abs(values[-1]))  # float rounding of the evaluations: no rise
    if max(curve.rise(t) for t in coarse) <= max(search.flat * (max(values) - min(values)), noise):
        for lo, hi in zip(coarse, coarse[1:]):  # flat against the chord: a grid twice as dense
            curve.add((lo + hi) / 2)
    n = len(curve.values)
    bumps = _bumps(curve, noise)
    if not bumps:
        return _result(curve, f"the curve stays on or below its chord at all {n} points; a peak narrower "
                              f"than their spacing ({1 / (n - 1):.3f} in t) would not show")
    settled = all([_refine(curve, t, search.rtol) for t in bumps[:2]])
    top = max(curve.values, key=curve.rise)
    low = curve.low_neighbour(top)
    if low is not None:
        return _result(curve, f"the highest point (t={top:.3f}) is not bracketed within its half height: its neighbour "
                              f"at t={low:.3f} rises less than half as high, so the peak may be higher between them")
    if not settled:
        return _result(curve, f"the budget of {search.max_points} evaluations ran out before the barrier settled "
                              f"within {search.rtol:.0%}")
    return _result(curve, None)


def _result(curve: _Curve, reason: str | None) -> BarrierSearch:
    return BarrierSearch(list(curve.order), [curve.values[t] for t in curve.order], reason is None, reason)


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
    merged: bool = True,
) -> pd.DataFrame:
    """A sweep frame whose t values per task locate that task's loss barrier (see the module docstring)."""
    search = search or AdaptiveSearch()
    spec = {**path.spec(), **forward_spec(path, merged)}
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
        frames, verdicts = [coarse], {}
        for task in tasks:
            rows = coarse[coarse.task == task.task.name]

            def loss_at(t: float, task=task) -> float:
                frame = score([job(t)], [task])
                frames.append(frame)
                return float(frame["loss"].iloc[0])

            found = search_barrier(loss_at, search, {float(t): float(v) for t, v in zip(rows["t"], rows["loss"])})
            verdicts[task.task.name] = {"evaluated": len(found.t), "resolved": found.resolved, "reason": found.reason}
    frame = pd.concat(frames, ignore_index=True).sort_values(["task", "t"], kind="stable", ignore_index=True)
    computed = sum(f.attrs.get("computed", 0) for f in frames)
    frame.attrs.update(computed=computed, cached=len(frame) - computed, search=vars(search).copy(), resolved=verdicts)
    return frame
