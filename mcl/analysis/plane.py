"""Loss over the 2-D plane through three adapters (Garipov et al. 2018, Fig. 1), with a path drawn on it.

The basis is Gram–Schmidt in the chosen space's inner product (factor tensors for `factors`, ΔW for
`delta`/`merged`): û = (b−a)/|b−a|, v̂ ∝ (c−a) minus its û part. Every grid point x·û + y·v̂ + a is the
affine combination (1−α−β)·a + α·b + β·c, so the space builds it exactly like a path point; a path's
projection is linear in its nodes, so drawing it needs only inner products of its nodes. Trajectories
(e.g. I-LoRA's fast and slow learners saved every N steps, `snapshot_trajectories`) are projected the
same way, with each point's distance from the plane kept beside its coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from mcl.adapters import AdapterState
from mcl.adapters.compat import same_dtype
from mcl.analysis.cache import PointCache
from mcl.analysis.sweep import PointJob, evaluate_points
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.paths import InterpolationPath, Space, content_hash, get_space


@dataclass
class Plane:
    """A scored grid on the plane through a, b, c: `frame` rows (x, y, task, loss, ...), anchors, drawn curve.

    `trajectories` maps a name to its projected points (columns step, x, y, off_plane).
    """

    frame: pd.DataFrame
    anchors: dict[str, tuple[float, float]]
    curve: pd.DataFrame | None
    space: str
    trajectories: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaneBasis:
    """Gram–Schmidt coordinates of the plane through a, b, c in one space."""

    gram: np.ndarray
    norm_u: float
    c_along: float
    norm_v: float

    @classmethod
    def of(cls, a: AdapterState, b: AdapterState, c: AdapterState, space: Space) -> "PlaneBasis":
        """Basis from the 3×3 Gram matrix of the anchors; collinear anchors are a one-line error."""
        nodes = [a, b, c]
        g = np.array([[space.inner(x, y) for y in nodes] for x in nodes])
        uu = g[1, 1] - 2 * g[0, 1] + g[0, 0]
        uw = g[2, 1] - g[2, 0] - g[0, 1] + g[0, 0]
        ww = g[2, 2] - 2 * g[0, 2] + g[0, 0]
        if uu <= 1e-12 * max(g[0, 0], 1e-30):
            raise MclError("the plane's first two adapters are identical; a plane needs three distinct points")
        norm_u = math.sqrt(uu)
        c_along = uw / norm_u
        vv = ww - c_along**2
        if vv <= 1e-9 * max(ww, uu):
            raise MclError("the three adapters are (nearly) collinear in this space; they span no plane")
        return cls(g, norm_u, c_along, math.sqrt(vv))

    def weights(self, x: float, y: float) -> list[float]:
        """Affine weights (w_a, w_b, w_c) of the plane point with coordinates (x, y)."""
        beta = y / self.norm_v
        alpha = x / self.norm_u - y * self.c_along / (self.norm_u * self.norm_v)
        return [1.0 - alpha - beta, alpha, beta]

    def coords(self, inner_with_abc: Sequence[float]) -> tuple[float, float]:
        """(x, y) of the projection of a node n onto the plane, from ⟨n, a⟩, ⟨n, b⟩, ⟨n, c⟩."""
        na, nb, nc = inner_with_abc
        g = self.gram
        x = (nb - na - g[0, 1] + g[0, 0]) / self.norm_u
        along_w = nc - na - g[0, 2] + g[0, 0]
        return x, (along_w - self.c_along * x) / self.norm_v

    def off_plane(self, inner_with_abc: Sequence[float], norm_sq: float) -> float:
        """Distance of node n from the plane, from ⟨n, a⟩, ⟨n, b⟩, ⟨n, c⟩ and ⟨n, n⟩."""
        x, y = self.coords(inner_with_abc)
        dist_sq = norm_sq - 2 * inner_with_abc[0] + self.gram[0, 0]  # |n − a|²
        return math.sqrt(max(dist_sq - x * x - y * y, 0.0))


def project(nodes: Sequence[AdapterState], a: AdapterState, b: AdapterState, c: AdapterState,
            space: str | Space = "factors", steps: Sequence[int] | None = None) -> pd.DataFrame:
    """Plane coordinates (x, y) and off-plane distance of each node, in the basis `plane` uses for a, b, c."""
    space = get_space(space)
    space.validate([a, b, c, *nodes])
    basis = PlaneBasis.of(a, b, c, space)
    rows = []
    for k, n in enumerate(nodes):
        inner = [space.inner(n, m) for m in (a, b, c)]
        x, y = basis.coords(inner)
        rows.append({"step": steps[k] if steps is not None else k, "x": x, "y": y,
                     "off_plane": basis.off_plane(inner, space.inner(n, n))})
    return pd.DataFrame(rows, columns=["step", "x", "y", "off_plane"])


def snapshot_trajectories(task_dir: str | Path, start: str | Path | None = None
                          ) -> dict[str, tuple[list[int], list[AdapterState]]]:
    """I-LoRA's snapshots of one task dir (`snapshots/step-<s>/{fast,slow}`): learner -> (steps, adapters).

    `start` (the previous task's dir) adds where both learners began the task, as step 0.
    """
    from mcl.adapters import read_adapter

    root = Path(task_dir) / "snapshots"
    steps = sorted(root.glob("step-*")) if root.is_dir() else []
    if not steps:
        raise MclError(f"{task_dir} holds no snapshots/step-*/ (train I-LoRA with method_args.snapshot_every: N)")
    out: dict[str, tuple[list[int], list[AdapterState]]] = {}
    for learner in ("fast", "slow"):
        dirs = [d for d in steps if (d / learner).is_dir()]
        if dirs:
            first = [(0, read_adapter(Path(start) / learner))] if start is not None else []
            out[learner] = ([s for s, _ in first] + [int(d.name[5:]) for d in dirs],
                            [n for _, n in first] + [read_adapter(d / learner) for d in dirs])
    return out


def plane(
    a: AdapterState,
    b: AdapterState,
    c: AdapterState,
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    grid: int = 11,
    margin: float = 0.2,
    space: str | Space = "factors",
    path: InterpolationPath | None = None,
    metric: bool = False,
    cache: PointCache | bool | None = True,
    progress: bool = True,
    trajectories: dict[str, tuple[Sequence[int], Sequence[AdapterState]]] | None = None,
) -> Plane:
    """Score every task on a grid×grid lattice over the plane through a, b, c (plus a margin around them).

    `trajectories` (name -> (steps, adapters)) are projected onto the plane and drawn by `plot_plane`;
    the grid then also covers their points.
    """
    if grid < 2:
        raise MclError(f"a plane grid needs at least 2 points per side, got {grid}")
    space = get_space(space)
    space.validate([a, b, c])
    a, b, c = same_dtype([a, b, c])
    basis = PlaneBasis.of(a, b, c, space)
    anchors = {"a": (0.0, 0.0), "b": (basis.norm_u, 0.0), "c": (basis.c_along, basis.norm_v)}
    traj = {name: project(nodes, a, b, c, space, steps) for name, (steps, nodes) in (trajectories or {}).items()}
    px = [0.0, basis.norm_u, basis.c_along, *(x for t in traj.values() for x in t["x"])]
    py = [0.0, basis.norm_v, *(y for t in traj.values() for y in t["y"])]
    lo_x, hi_x, lo_y, hi_y = min(px), max(px), min(py), max(py)
    xs = np.linspace(lo_x - margin * (hi_x - lo_x), hi_x + margin * (hi_x - lo_x), grid)
    ys = np.linspace(lo_y - margin * (hi_y - lo_y), hi_y + margin * (hi_y - lo_y), grid)
    hashes = [content_hash(n) for n in (a, b, c)]
    jobs = []
    for y in ys:
        for x in xs:
            w = basis.weights(float(x), float(y))
            jobs.append(PointJob({"plane": hashes, "space": space.name, "weights": [round(v, 12) for v in w]},
                                 lambda w=w: space.combine([a, b, c], w),
                                 {"x": float(x), "y": float(y), "w_a": w[0], "w_b": w[1], "w_c": w[2], "space": space.name}))
    frame = evaluate_points(jobs, lambda: space.bind(model, space.combine([a, b, c], [1.0, 0.0, 0.0])), model, tasks,
                            metric, cache, progress, desc=f"plane {space.name}")
    curve = None
    if path is not None:
        node_xy = np.array([basis.coords([space.inner(n, m) for m in (a, b, c)]) for n in path.nodes])
        ts = np.linspace(0.0, 1.0, 101)
        xy = np.array([np.asarray(path.weights(float(t))) @ node_xy for t in ts])
        curve = pd.DataFrame({"t": ts, "x": xy[:, 0], "y": xy[:, 1]})
    return Plane(frame, anchors, curve, space.name, traj)
