"""`mcl barrier-matrix RUN_DIR | CKPT ...`: linear-path barriers between every pair of checkpoints.

Given a run dir, the checkpoints are its per-task adapters `tasks/<k>-<task>/` in order (for methods
that save several learners per task, e.g. I-LoRA's fast/ and slow/, `--learner` picks one) and the
tasks default to the run's config.yaml `tasks`. Writes
barriers.csv (long table), curves.csv (the sweeps), heatmaps barrier_matrix[_metric].png/.html and
barrier_matrix.json (last).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcl.cli.barrier_cmd import (add_eval_arguments, apply_base_override, cache_arg, check_eval_args,
                                 load_model_and_tasks, write_csv)
from mcl.cli.common import add_points_argument, choice_argument
from mcl.errors import MclError

MATRIX_FILES = ("barrier_matrix.json", "barriers.csv", "curves.csv", "barrier_matrix.png", "barrier_matrix.html",
                "barrier_matrix_metric.png", "barrier_matrix_metric.html", "plotly.min.js")  # that of earlier versions


def checkpoint_dirs(paths: list[str], learner: str) -> list[Path]:
    """The run's per-task adapter dirs (sorted by task index), or the given dirs themselves."""
    if len(paths) == 1 and (Path(paths[0]) / "tasks").is_dir():
        from mcl.train.records import task_dirs

        dirs = task_dirs(paths[0])
        dirs = [d if (d / "adapter_config.json").is_file() else d / learner for d in dirs]
    else:
        dirs = [Path(p) for p in paths]
    if len(dirs) < 2:
        raise MclError(f"a barrier matrix needs at least 2 checkpoints, found {len(dirs)} in {' '.join(paths)}")
    return dirs


def _matrix(args: argparse.Namespace) -> int:
    from mcl.adapters import read_adapter
    from mcl.analysis import barrier_matrix, plot_barrier_matrix, t_grid
    from mcl.analysis.distributed import ranks
    from mcl.io import check_output, staged_outputs, write_json_atomic
    from mcl.lock import hold_output
    from mcl.paths import get_space

    check_eval_args(args)
    points = t_grid(args.points)
    dirs = checkpoint_dirs(args.checkpoints, args.learner)
    is_run = (Path(args.checkpoints[0]) / "tasks").is_dir()
    if not args.out and not is_run:
        raise MclError("pass --out DIR (the default, RUN_DIR/analysis/barrier-matrix, needs a run dir)")
    out = Path(args.out or Path(args.checkpoints[0]) / "analysis" / "barrier-matrix")
    if not args.out:  # check_eval_args checked and locked an explicit --out
        check_output(out, "dir")
        hold_output(out)
    states = [read_adapter(d) for d in dirs]
    apply_base_override(states, args.model)
    run_config = Path(args.checkpoints[0]) / "config.yaml"
    recorded = any(s.meta.get("tasks") for s in states)  # checkpoints that record their data score exactly it
    if is_run and not args.tasks and not recorded and run_config.is_file():
        import yaml

        args.tasks = yaml.safe_load(run_config.read_text()).get("tasks")
    space = get_space(args.space)
    space.validate(states)
    labels = [d.name if d.name not in ("fast", "slow") else f"{d.parent.name}/{d.name}" for d in dirs]
    model, _, tasks = load_model_and_tasks(args, states)
    bm = barrier_matrix(states, model, tasks, points, space.name, args.metric, cache_arg(args), labels,
                        progress=not args.quiet)
    if not ranks().main:  # the other processes shared the work; the main one prints and writes
        return 0
    loss = bm.barriers[bm.barriers.measure == "loss"]
    print(f"linear-path loss barriers (max_minus_linear, {space.name} space, {len(points)} points)")
    print(loss.pivot_table(index=["a", "b"], columns="task", values="max_minus_linear", sort=False)
          .to_string(float_format=lambda x: f"{x:.4f}"))
    with staged_outputs(out, "barrier_matrix.json", MATRIX_FILES) as stage:
        write_csv(bm.barriers, stage / "barriers.csv")
        write_csv(bm.curves, stage / "curves.csv")
        plot_barrier_matrix(bm, stage / "barrier_matrix.png", stage / "barrier_matrix.html")
        if args.metric:
            plot_barrier_matrix(bm, stage / "barrier_matrix_metric.png", stage / "barrier_matrix_metric.html",
                                measure="metric")
        write_json_atomic(stage / "barrier_matrix.json", {
            "checkpoints": [str(d) for d in dirs], "labels": labels, "space": space.name, "points": points,
            "split": args.split, "max_len": {t.task.name: t.max_len for t in tasks},
            "barriers": bm.barriers.to_dict(orient="records"),
        })
    print(f"wrote {out}/barrier_matrix.json, barriers.csv, curves.csv, barrier_matrix.png, barrier_matrix.html")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl barrier-matrix`."""
    p = sub.add_parser("barrier-matrix", help="barriers between every pair of a run's per-task checkpoints")
    p.add_argument("checkpoints", nargs="+", metavar="RUN_DIR|CKPT", help="a run dir, or two or more adapter dirs")
    choice_argument(p, "--space", "spaces", "interpolation space", default="factors")
    add_points_argument(p, help="t values from 0 to 1 per pair")
    p.add_argument("--learner", default="slow", metavar="NAME",
                   help="sub-adapter to use when a task dir holds several, e.g. I-LoRA's slow or fast (default slow)")
    p.add_argument("--out", metavar="DIR", help="output dir (default RUN_DIR/analysis/barrier-matrix)")
    add_eval_arguments(p)
    p.set_defaults(func=_matrix)
