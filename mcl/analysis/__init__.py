"""Mode-connectivity analysis on top of mcl.paths and mcl.eval: sweeps, barriers, matrices, planes, plots.

- `sweep`: `sweep(path, model, tasks, points)` → DataFrame; `path_barriers`; `evaluators` builds tasks
- `adaptive`: `adaptive_sweep` / `sweep(..., points="auto")` — coarse grid refined at each task's barrier, or
  said to be unsure (`resolved`); `search_barrier(f)` for one curve
- `bootstrap`: `bootstrap_barriers(frames)` — percentile intervals over eval examples (and runs)
- `barriers`: the barrier metric registry `BARRIER_METRICS` and `barriers(t, values, higher_is_better)`
- `matrix`: `barrier_matrix(checkpoints, model, tasks)` over all pairs
- `plane`: `plane(a, b, c, model, tasks, trajectories=...)` — loss over the plane through three adapters;
  `project`, `snapshot_trajectories` place training trajectories (I-LoRA snapshots) on it
- `cache`: `PointCache`, the on-disk store of evaluated points
- `distributed`: `ranks`, `run_shared` — sweeps split their (point, task) units over torchrun processes
- `plots`: `plot_path`, `plot_barrier_matrix`, `plot_plane` (PNG + HTML; matplotlib and plotly load on first use)
- `objective`: `TaskObjective`, the train-split loss a curve fit minimises
"""

from mcl.analysis.adaptive import AdaptiveSearch, BarrierSearch, adaptive_sweep, search_barrier
from mcl.analysis.barriers import BARRIER_METRICS, BarrierMetric, barriers
from mcl.analysis.bootstrap import Bootstrap, bootstrap_barriers, interval_verdict, paired_op_difference
from mcl.analysis.cache import PointCache, model_fingerprint
from mcl.analysis.matrix import BarrierMatrix, barrier_matrix
from mcl.analysis.objective import TaskObjective
from mcl.analysis.plane import Plane, plane, project, snapshot_trajectories
from mcl.analysis.sweep import evaluate_points, evaluators, path_barriers, sweep, t_grid

__all__ = [
    "AdaptiveSearch", "BARRIER_METRICS", "BarrierMatrix", "BarrierSearch", "BarrierMetric", "Bootstrap", "Plane",
    "PointCache",
    "TaskObjective", "adaptive_sweep", "barrier_matrix", "barriers", "bootstrap_barriers", "evaluate_points",
    "evaluators", "interval_verdict", "model_fingerprint", "paired_op_difference", "path_barriers", "plane",
    "plot_barrier_matrix", "plot_path", "plot_plane", "project", "search_barrier", "snapshot_trajectories", "sweep",
    "t_grid",
]


_PLOTS = ("plot_barrier_matrix", "plot_path", "plot_plane")


def __getattr__(name: str):
    """Plot functions load matplotlib and plotly only when first asked for."""
    if name in _PLOTS:
        from mcl.analysis import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
