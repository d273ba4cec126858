"""`mcl plane A B C --out DIR`: loss over the plane through three adapters, with a path drawn on it.

Writes DIR/plane.csv (one row per grid point and task), plane.png, plane.html and plane.json (last);
with `--snapshots TASK_DIR` (an I-LoRA task dir trained with `snapshot_every`) also the fast and slow
learners' trajectories, drawn on the plane and written to trajectories.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcl.cli.barrier_cmd import (add_eval_arguments, apply_base_override, cache_arg, check_eval_args,
                                 load_model_and_tasks, write_csv)
from mcl.cli.common import choice_argument
from mcl.errors import MclError

PLANE_FILES = ("plane.json", "plane.csv", "plane.png", "plane.html", "trajectories.csv",
               "plotly.min.js")  # the last: shared by the HTML of earlier versions, now self-contained


def _plane(args: argparse.Namespace) -> int:
    from mcl.adapters import read_adapter
    from mcl.analysis import plane, plot_plane, snapshot_trajectories
    from mcl.analysis.distributed import ranks
    from mcl.io import staged_outputs, write_json_atomic
    from mcl.paths import get_space, make_path

    check_eval_args(args)
    if not 2 <= args.grid <= 201 or not (0 <= args.margin <= 10):
        raise MclError(f"--grid must lie in [2, 201] and --margin in [0, 10] (got {args.grid}, {args.margin})")
    a, b, c = (read_adapter(d) for d in (args.a, args.b, args.c))
    apply_base_override([a, b, c], args.model)
    space = get_space(args.space)
    space.validate([a, b, c])
    drawn = None
    if args.draw:
        drawn = make_path(args.draw, [a, b] if args.draw == "linear" else [a, c, b], space)
    traj = snapshot_trajectories(args.snapshots, args.snapshots_start) if args.snapshots else None
    if traj:
        space.validate([a, b, c, *(n for _, nodes in traj.values() for n in nodes)])
    model, _, tasks = load_model_and_tasks(args, [a, b, c],
                                           extra=[n for _, nodes in (traj or {}).values() for n in nodes])
    pl = plane(a, b, c, model, tasks, args.grid, args.margin, space, drawn, args.metric, cache_arg(args),
               progress=not args.quiet, trajectories=traj)
    if not ranks().main:  # the other processes shared the work; the main one prints and writes
        return 0
    summary = pl.frame.groupby("task")["loss"].agg(["min", "max"])
    print(f"plane through {args.a}, {args.b}, {args.c} ({space.name} space, {args.grid}x{args.grid} grid)")
    print(summary.to_string(float_format=lambda x: f"{x:.4f}"))
    out = Path(args.out)
    with staged_outputs(out, "plane.json", PLANE_FILES) as stage:
        write_csv(pl.frame, stage / "plane.csv")
        if pl.trajectories:
            import pandas as pd

            write_csv(pd.concat([t.assign(learner=name) for name, t in pl.trajectories.items()]),
                      stage / "trajectories.csv")
        plot_plane(pl, stage / "plane.png", stage / "plane.html")
        write_json_atomic(stage / "plane.json", {
            "a": args.a, "b": args.b, "c": args.c, "space": space.name, "grid": args.grid, "margin": args.margin,
            "anchors": pl.anchors, "drawn": args.draw, "split": args.split,
            "max_len": {t.task.name: t.max_len for t in tasks}, "tasks": sorted(set(pl.frame.task)),
            "curve": None if pl.curve is None else pl.curve.to_dict(orient="list"), "snapshots": args.snapshots,
            "trajectories": {name: t.to_dict(orient="list") for name, t in pl.trajectories.items()},
        })
    print(f"wrote {out}/plane.json, plane.csv, plane.png, plane.html")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl plane`."""
    p = sub.add_parser("plane", help="loss over the plane through three adapters (Gram-Schmidt basis)")
    p.add_argument("a", metavar="CKPT_A", help="first adapter (PEFT dir): the plane's origin")
    p.add_argument("b", metavar="CKPT_B", help="second adapter (PEFT dir)")
    p.add_argument("c", metavar="CKPT_C", help="third adapter, e.g. a fitted control point")
    p.add_argument("--out", required=True, metavar="DIR", help="write plane.json, plane.csv, plane.png, plane.html here")
    choice_argument(p, "--space", "spaces", "interpolation space", default="factors")
    p.add_argument("--grid", type=int, default=11, metavar="N", help="grid points per side (default 11)")
    p.add_argument("--margin", type=float, default=0.2, metavar="F",
                   help="extra room around the three points, as a fraction (default 0.2)")
    p.add_argument("--snapshots", metavar="TASK_DIR",
                   help="draw the fast and slow learners' snapshots of an I-LoRA task dir (method_args.snapshot_every)")
    p.add_argument("--snapshots-start", metavar="TASK_DIR",
                   help="the previous task's dir: where both learners began, drawn as step 0")
    choice_argument(p, "--draw", "paths", "draw a path on the plane (linear: A→B; the others through C)",
                    default_text="none")
    add_eval_arguments(p)
    p.set_defaults(func=_plane)
