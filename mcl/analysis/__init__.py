"""Mode-connectivity analysis on top of mcl.paths and mcl.eval: sweeps, barriers, matrices, planes, plots.

- `sweep`: `sweep(path, model, tasks, points)` → DataFrame; `path_barriers`; `evaluators` builds tasks
- `barriers`: the barrier metric registry `BARRIER_METRICS` and `barriers(t, values, higher_is_better)`
- `matrix`: `barrier_matrix(checkpoints, model, tasks)` over all pairs
- `plane`: `plane(a, b, c, model, tasks)` — loss over the plane through three adapters
- `cache`: `PointCache`, the on-disk store of evaluated points
- `objective`: `TaskObjective`, the train-split loss a curve fit minimises
- `plots`: `plot_path`, `plot_barrier_matrix`, `plot_plane` (PNG + HTML)
"""

from mcl.analysis.barriers import BARRIER_METRICS, BarrierMetric, barriers
from mcl.analysis.cache import PointCache, model_fingerprint
from mcl.analysis.matrix import BarrierMatrix, barrier_matrix
from mcl.analysis.objective import TaskObjective
from mcl.analysis.plane import Plane, plane
from mcl.analysis.plots import plot_barrier_matrix, plot_path, plot_plane
from mcl.analysis.sweep import evaluate_points, evaluators, path_barriers, sweep, t_grid

__all__ = [
    "BARRIER_METRICS", "BarrierMatrix", "BarrierMetric", "Plane", "PointCache", "TaskObjective", "barrier_matrix",
    "barriers",
    "evaluate_points", "evaluators", "model_fingerprint", "path_barriers", "plane", "plot_barrier_matrix",
    "plot_path", "plot_plane", "sweep", "t_grid",
]
