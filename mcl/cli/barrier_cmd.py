"""`mcl-barrier CKPT_A CKPT_B` (also `mcl barrier`): loss and metric barriers along a path between two adapters.

Also the helpers the other analysis commands share: evaluation flags, the base model and task list
taken from the checkpoints (adapter config / mcl.json sidecar) unless given, and output writing where
the completion marker (`barrier.json`, `plane.json`, ...) is written last and removed first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mcl.cli.common import DEFAULT_POINTS, add_model_argument, add_quiet_argument, add_tasks_argument, apply_threads
from mcl.cli.common import add_eval_arguments as common_eval_arguments
from mcl.cli.common import choice_argument
from mcl.cli.main import run_cli
from mcl.errors import MclError

if TYPE_CHECKING:  # torch, peft and pandas load only when a command runs
    import pandas as pd

    from mcl.adapters import AdapterState

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by barrier, curve, plane and barrier-matrix: base model, tasks and evaluation settings."""
    add_model_argument(p)
    add_tasks_argument(p)
    common_eval_arguments(p)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the sweep cache")
    add_quiet_argument(p)


def base_of(states: Sequence[AdapterState], override: str | None) -> str:
    """The base model to load: `--model`, else the one the checkpoints name."""
    if override:
        return override
    named = [s.base_model for s in states if s.base_model]
    if not named:
        raise MclError(f"{states[0].label} does not name its base model: pass --model MODEL")
    return named[0]


def tasks_of(states: Sequence[AdapterState], override: Sequence[str] | None) -> list[str]:
    """The tasks to evaluate: `--tasks`, else the `task` of each checkpoint's mcl.json (in order, once each)."""
    if override:
        return list(override)
    names = list(dict.fromkeys(s.meta["task"] for s in states if s.meta.get("task")))
    if not names:
        raise MclError("no tasks to evaluate: pass --tasks TASK ... (the checkpoints' mcl.json name no task)")
    return names


def load_model_and_tasks(args: argparse.Namespace, states: Sequence[AdapterState], split: str | None = None):
    """(model, tokenizer, task evaluators) for the checkpoints, honouring the shared flags."""
    from mcl.analysis import evaluators
    from mcl.models import load_base

    apply_threads(args)
    names = tasks_of(states, args.tasks)
    model, tokenizer = load_base(base_of(states, args.model))
    return model, tokenizer, evaluators(tokenizer, names, split or args.split, args.batch_size, args.max_len, args.limit)


def cache_arg(args: argparse.Namespace) -> bool:
    """Whether to use the sweep cache."""
    return not args.no_cache


def start_outputs(out: Path, marker: str) -> Path:
    """Create `out` and remove a stale completion marker, so a failed run never looks complete."""
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).unlink(missing_ok=True)
    return out


def write_csv(frame: pd.DataFrame, dest: Path) -> None:
    """Write a DataFrame as CSV atomically."""
    from mcl.io import atomic_path

    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False)


def read_nodes(args: argparse.Namespace) -> tuple[AdapterState, list[AdapterState], AdapterState, dict[str, Any]]:
    """Endpoints, control points (PEFT dirs or one `mcl curve fit` dir) and the curve's recorded path/space."""
    from mcl.adapters import read_adapter
    from mcl.paths.fit import CURVE_FILE, read_curve

    a, b = read_adapter(args.a), read_adapter(args.b)
    dirs, curve = list(args.controls or []), {}
    if len(dirs) == 1 and (Path(dirs[0]) / CURVE_FILE).is_file():
        curve = read_curve(dirs[0])
        dirs = curve["controls"]
    return a, [read_adapter(d) for d in dirs], b, curve


def barrier_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per task: endpoint losses, the loss barriers and (when scored) the metric barrier."""
    import pandas as pd

    rows = []
    for task, r in result["tasks"].items():
        row = {"task": task, "loss(0)": r["loss"][0], "loss(1)": r["loss"][-1], **r["barrier"]["loss"]}
        if r["metric"] is not None:
            row.update({r["metric_name"] + "(0)": r["metric"][0], r["metric_name"] + "(1)": r["metric"][-1],
                        "metric_drop": r["barrier"]["metric"]["max_minus_linear"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")


def run(args: argparse.Namespace) -> int:
    """Sweep the path, print the barrier table, write the outputs (barrier.json last)."""
    from mcl.analysis import path_barriers, plot_path, sweep, t_grid
    from mcl.io import write_json_atomic
    from mcl.paths import get_space, make_path, path_class

    points = t_grid(args.points)
    a, controls, b, curve = read_nodes(args)
    space = get_space(args.space or curve.get("space", "factors"))
    kind = args.path or curve.get("path", "linear")
    if path_class(kind).max_nodes != 2 and not controls:
        raise MclError(f"a {kind} path needs control points: pass --controls DIR ... (fit them with `mcl curve fit`)")
    path = make_path(kind, [a, *controls, b], space)
    model, _, tasks = load_model_and_tasks(args, [a, b])
    frame = sweep(path, model, tasks, points, args.metric, cache_arg(args), progress=not args.quiet)
    result = {"a": args.a, "b": args.b, "base": base_of([a, b], args.model), "path": path.name, "space": space.name,
              "controls": [c.label for c in controls], "split": args.split, "points": points,
              "tasks": path_barriers(frame)}
    print(f"{path.name} path in {space.name} space, {len(points)} points, {args.split} split")
    print(barrier_table(result).to_string(float_format=lambda x: f"{x:.4f}"))
    if args.out:
        out = start_outputs(Path(args.out), "barrier.json")
        write_csv(frame, out / "path.csv")
        title = f"{Path(args.a).name} → {Path(args.b).name} ({path.name}, {space.name})"
        plot_path(frame, out / "path.png", out / "path.html", title=title)
        write_json_atomic(out / "barrier.json", result)
        print(f"wrote {out}/barrier.json, path.csv, path.png, path.html")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `mcl-barrier` / `mcl barrier`."""
    p.add_argument("a", metavar="CKPT_A", help="first adapter (PEFT dir)")
    p.add_argument("b", metavar="CKPT_B", help="second adapter (PEFT dir)")
    choice_argument(p, "--path", "paths", "path between the adapters", default_text="linear, or the fitted curve's")
    choice_argument(p, "--space", "spaces", "interpolation space", default_text="factors, or the fitted curve's")
    p.add_argument("--controls", nargs="+", metavar="DIR",
                   help="control points of a bezier/polychain path: PEFT dirs, or one `mcl curve fit` output dir")
    p.add_argument("--points", type=int, default=DEFAULT_POINTS, help=f"t values from 0 to 1 (default {DEFAULT_POINTS})")
    p.add_argument("--out", metavar="DIR", help="write barrier.json, path.csv, path.png, path.html here")
    add_eval_arguments(p)
    p.set_defaults(func=run)


DESCRIPTION = "Loss (and task-metric) barrier along a path between two LoRA adapters of one base model."


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone `mcl-barrier` parser."""
    p = argparse.ArgumentParser(prog="mcl-barrier", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl barrier`."""
    add_arguments(sub.add_parser("barrier", help="barrier along a path between two adapters", description=DESCRIPTION))


def main(argv: list[str] | None = None) -> int:
    """Console script `mcl-barrier`."""
    return run_cli(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
