"""Continual-learning metrics from an R matrix (DESIGN.md §8).

R[k, i] is the score on task i after training through phase k; b[i] the base model's score.
The same formulas are applied to the loss matrix as it is (nats): there OP is the mean final
loss and a positive BWT means old tasks' losses rose (forgetting), the opposite sign of scores.
"""

from __future__ import annotations

import numpy as np


def cl_metrics(R: np.ndarray, base: np.ndarray | None = None) -> dict[str, float]:
    """OP, BWT, FWT and average forgetting of a (phases × tasks) score matrix (NaN when undefined)."""
    R = np.asarray(R, dtype=float)
    T = R.shape[1]
    out = {"OP": float(np.mean(R[-1]))}
    if R.shape[0] != T or T < 2:  # joint training has one row: no sequence, no transfer
        out.update(BWT=float("nan"), FWT=float("nan"), forgetting=float("nan"))
        return out
    out["BWT"] = float(np.mean([R[T - 1, i] - R[i, i] for i in range(T - 1)]))
    if base is not None:
        base = np.asarray(base, dtype=float)
        out["FWT"] = float(np.mean([R[i - 1, i] - base[i] for i in range(1, T)]))
    else:
        out["FWT"] = float("nan")
    out["forgetting"] = float(np.mean([R[: T - 1, i].max() - R[T - 1, i] for i in range(T - 1)]))
    return out
