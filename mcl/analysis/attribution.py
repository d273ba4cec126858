"""Per-module barrier attribution: move one group of LoRA modules along the path, hold the rest fixed.

Groups (a registry): `layers` (decoder layer index) or `modules` (q_proj, k_proj, …, down_proj). For
each group G, the point at t takes G's tensors from `path.point(t)` and every other tensor from the
held point: endpoint `a` (t = 0), endpoint `b` (t = 1) or the path's middle `mid` (t = 0.5). The
group's barrier is the loss barrier of that curve; a group whose curve stays flat does not make the
barrier. Works in factors and delta space (their points share one tensor layout along the path).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import pandas as pd
import torch

from mcl.adapters import AdapterState
from mcl.analysis.sweep import PointJob, evaluate_points, path_barriers, t_grid
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.paths import InterpolationPath
from mcl.paths.merged_forward import bind_for_forward, forward_spec

_LAYER = re.compile(r"\.layers\.(\d+)\.")

GROUPINGS: dict[str, Callable[[str], str]] = {
    "layers": lambda key: f"layer {int(m.group(1))}" if (m := _LAYER.search(key)) else "other",
    "modules": lambda key: key.split(".lora_")[0].rsplit(".", 1)[-1],
}
HOLDS = {"a": 0.0, "mid": 0.5, "b": 1.0}


def groups(state: AdapterState, by: str) -> dict[str, list[str]]:
    """Tensor keys of a point per group name, in first-seen order."""
    if by not in GROUPINGS:
        raise MclError(f"unknown attribution grouping {by!r}; choose from {', '.join(GROUPINGS)}")
    out: dict[str, list[str]] = {}
    for key in sorted(state.tensors, key=lambda k: (int(m.group(1)) if (m := _LAYER.search(k)) else -1, k)):
        out.setdefault(GROUPINGS[by](key), []).append(key)
    return out


def attribute(
    path: InterpolationPath,
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    by: str = "layers",
    hold: str = "a",
    points: int | Sequence[float] = 11,
    cache=True,
    merged: bool = True,
) -> pd.DataFrame:
    """One row per (group, task): the loss barrier when only that group moves along the path."""
    if hold not in HOLDS:
        raise MclError(f"unknown hold {hold!r}; choose from {', '.join(HOLDS)}")
    if path.space.name not in ("factors", "delta"):
        raise MclError(f"attribution needs factors or delta space (one tensor layout along the path), not {path.space.name}")
    held = path.point(HOLDS[hold])
    spec = {**path.spec(), **forward_spec(path, merged)}

    def state(group: list[str], t: float) -> AdapterState:
        moving = path.point(t)
        return AdapterState(dict(moving.config), {k: moving.tensors[k] if k in group else held.tensors[k] for k in held.tensors})

    jobs = [PointJob({**spec, "t": round(t, 12), "group": name, "by": by, "hold": hold},
                     lambda keys=keys, t=t: state(keys, t), {"t": t, "group": name})
            for name, keys in groups(held, by).items() for t in t_grid(points)]
    frame = evaluate_points(jobs, lambda: bind_for_forward(path, model, merged), model, tasks, cache=cache,
                            progress=False)
    rows = []
    for name, g in frame.groupby("group", sort=False):
        for task, r in path_barriers(g).items():
            rows.append({"group": name, "task": task, "hold": hold, **r["barrier"]["loss"],
                         "loss_range": max(r["loss"]) - min(r["loss"])})
    return pd.DataFrame(rows)


def plot_attribution(table: pd.DataFrame, png, title: str = "") -> None:
    """Bar chart of each group's loss barrier (max above chord), one bar per task."""
    import numpy as np
    from matplotlib.figure import Figure

    from mcl.analysis.plots import save_png

    wide = table.pivot_table(index="group", columns="task", values="max_minus_linear", sort=False)
    fig = Figure(figsize=(max(4.0, 0.7 * len(wide) * len(wide.columns)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(wide.columns)
    x = np.arange(len(wide))
    for k, task in enumerate(wide.columns):
        ax.bar(x + k * width - 0.4 + width / 2, wide[task], width, label=task)
    ax.set_xticks(x, wide.index, rotation=30, ha="right")
    ax.set_ylabel("loss barrier, group moved alone (nats)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    save_png(fig, png)
