"""Bootstrap confidence intervals for loss curves and their barriers, over eval examples (and over runs).

A sweep made with `per_example=True` keeps, at every (t, task), each example's summed label-token loss
and label-token count. One bootstrap replicate draws the task's examples with replacement (the same
draw at every t: the curve is resampled as a whole), recomputes the token-pooled loss at every t and
every registered barrier metric on that curve. The interval is the percentile interval of the
replicates. Given several sweeps (runs with different seeds, same path kind and tasks), a replicate
first draws runs with replacement, then examples within each drawn run, and averages the drawn runs'
values, so the interval covers run-to-run and example-to-example variation. Task metrics from greedy
generation have no per-example form here; their barriers get no interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mcl.analysis.barriers import BARRIER_METRICS
from mcl.errors import MclError

PER_EXAMPLE = ("example_sums", "example_counts")


@dataclass(frozen=True)
class Bootstrap:
    """Interval settings: confidence level, number of replicates and the random seed."""

    level: float = 0.95
    replicates: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise MclError(f"confidence level must lie in (0, 1), e.g. 0.95; got {self.level}")
        if self.replicates < 10:
            raise MclError(f"a bootstrap needs at least 10 replicates, got {self.replicates}")

    def interval(self, samples: np.ndarray) -> np.ndarray:
        """Percentile interval [low, high] along the first axis of `samples`."""
        tail = (1.0 - self.level) / 2
        return np.quantile(samples, [tail, 1.0 - tail], axis=0)


def _task_arrays(frame: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, sums[T, N], counts[T, N]) of one task's curve in a per-example sweep frame."""
    if not set(PER_EXAMPLE) <= set(frame.columns) or frame[list(PER_EXAMPLE)].isna().any().any():
        raise MclError("confidence intervals need per-example losses: sweep with per_example=True")
    g = frame[frame.task == task].sort_values("t")
    return g["t"].to_numpy(float), np.stack(g["example_sums"].map(np.asarray)), np.stack(g["example_counts"].map(np.asarray))


def _replicate_curves(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Token-pooled loss curves [B, T] for example weights [B, N] (how often each example was drawn)."""
    return (weights @ sums.T) / np.maximum(weights @ counts.T, 1.0)


def _draws(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)


def _metrics(t: np.ndarray, curves: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.array([m(t, c) for c in curves]) for name, m in BARRIER_METRICS.items()}


def bootstrap_barriers(frames: pd.DataFrame | Sequence[pd.DataFrame], settings: Bootstrap | None = None
                       ) -> dict[str, dict[str, Any]]:
    """Per task: {"level", "replicates", "loss": {metric: [lo, hi]}, "band": [[lo, hi] per t]} over examples (and runs)."""
    settings = settings or Bootstrap()
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    if not frames:
        raise MclError("bootstrap_barriers needs at least one sweep frame")
    rng = np.random.default_rng(settings.seed)
    out = {}
    for task in frames[0]["task"].unique():
        runs = [_task_arrays(f, task) for f in frames]
        same_t = all(len(r[0]) == len(runs[0][0]) and np.allclose(r[0], runs[0][0]) for r in runs)
        picks = rng.integers(0, len(runs), size=(settings.replicates, len(runs))) if len(runs) > 1 else \
            np.zeros((settings.replicates, 1), dtype=int)
        per_run = []
        for t, sums, counts in runs:
            curves = _replicate_curves(sums, counts, _draws(rng, settings.replicates, sums.shape[1]))
            per_run.append((curves, _metrics(t, curves)))
        metric_samples = {name: np.mean([[per_run[p][1][name][b] for p in picks[b]] for b in range(settings.replicates)],
                                        axis=1) for name in BARRIER_METRICS}
        entry: dict[str, Any] = {"level": settings.level, "replicates": settings.replicates, "runs": len(runs),
                                 "loss": {k: settings.interval(v).tolist() for k, v in metric_samples.items()}}
        if same_t:
            band = np.stack([np.mean([per_run[p][0][b] for p in picks[b]], axis=0) for b in range(settings.replicates)])
            entry["band"] = settings.interval(band).T.tolist()
        out[task] = entry
    return out


def with_bands(frame: pd.DataFrame, intervals: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The frame without per-example columns, plus loss_low/loss_high from `bootstrap_barriers` bands (for plots)."""
    parts = []
    for task, g in frame.drop(columns=list(PER_EXAMPLE), errors="ignore").groupby("task", sort=False):
        g = g.sort_values("t")
        band = np.asarray(intervals[task].get("band", np.full((len(g), 2), np.nan)))
        parts.append(g.assign(loss_low=band[:, 0], loss_high=band[:, 1]))
    return pd.concat(parts, ignore_index=True)


def paired_op_difference(a: dict[int, dict[str, np.ndarray]], b: dict[int, dict[str, np.ndarray]],
                         settings: Bootstrap = Bootstrap()) -> dict[str, Any]:
    """Paired bootstrap over seeds and examples of OP(a) − OP(b): {diff, low, high, seeds, per_seed}.

    `a[seed][task]` and `b[seed][task]` are per-example final scores on the same eval examples (same order).
    A replicate draws seeds with replacement, then each drawn seed's examples of every task with replacement
    (the same draw for a and b: the comparison is paired), and averages the per-task mean differences.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise MclError("no seed has per-example scores for both methods")
    rng = np.random.default_rng(settings.seed)
    B = settings.replicates
    per_seed, samples = [], []
    for s in seeds:
        tasks = sorted(a[s])
        if sorted(b[s]) != tasks:
            raise MclError(f"seed {s}: the two runs scored different tasks ({tasks} vs {sorted(b[s])})")
        d = [np.asarray(a[s][t], float) - np.asarray(b[s][t], float) for t in tasks]
        if any(len(x) != len(y) for x, y in zip((a[s][t] for t in tasks), (b[s][t] for t in tasks))):
            raise MclError(f"seed {s}: the two runs scored different numbers of examples; not a paired comparison")
        per_seed.append(float(np.mean([x.mean() for x in d])))
        samples.append(np.mean([x[rng.integers(0, len(x), (B, len(x)))].mean(1) for x in d], axis=0))
    draws = rng.integers(0, len(seeds), (B, len(seeds)))
    reps = np.stack(samples)[draws, np.arange(B)[:, None]].mean(1)
    tail = (1 - settings.level) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return {"diff": float(np.mean(per_seed)), "low": float(low), "high": float(high), "seeds": seeds,
            "per_seed": per_seed}


def interval_verdict(intervals: Sequence[tuple[float, float]]) -> str:
    """'holds' when every interval lies above 0, 'does not hold' when one lies below 0, else 'inconclusive'."""
    if intervals and all(low > 0 for low, _ in intervals):
        return "holds"
    if any(high < 0 for _, high in intervals):
        return "does not hold"
    return "inconclusive"
