"""Continual-learning metrics from an R matrix (docs/design.md §7).

R[k, i] is the score on task i after training through phase k; b[i] the base model's score.
For a loss matrix (nats, lower is better) `cl_metrics_loss` mirrors them: OP is the mean final loss,
BWT and FWT are loss differences (BWT > 0: old tasks' losses rose), forgetting_i = R[T,i] −
min_{k<T} R[k,i] (> 0: forgotten).
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


def cl_metrics_loss(L: np.ndarray, base: np.ndarray | None = None) -> dict[str, float]:
    """OP, BWT, FWT and forgetting of a loss matrix (the score formulas applied to −loss, signs mirrored)."""
    m = cl_metrics(-np.asarray(L, dtype=float), None if base is None else -np.asarray(base, dtype=float))
    return {"OP": -m["OP"], "BWT": -m["BWT"], "FWT": -m["FWT"], "forgetting": m["forgetting"]}
