"""`mcl-barrier CKPT_A CKPT_B` (also `mcl barrier`): loss and metric barriers along a path between two adapters.

Several pairs run in one process (start-up and the base model paid once): a chain `A B C …` sweeps
A→B, B→C, …, and `--pairs FILE` lists pairs; their outputs go to one sub-dir of --out per pair.

Also the helpers the other analysis commands share: evaluation flags (and the lock on `--out`, held from the
checks to the last write), the base model and task list taken from the checkpoints (adapter config / mcl.json
sidecar) unless given. Outputs are staged and swapped in together (`mcl.io.staged_outputs`): the completion
marker (`barrier.json`, `plane.json`, ...) is removed first and written last, and an earlier invocation's
outputs that this one does not write (e.g. attribution.csv without --attribute) are removed in the swap.
"""

from __future__ import annotations

import argparse
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mcl.cli.device_args import add_device_args, model_kwargs
from mcl.cli.common import DEFAULT_POINTS, add_model_argument, add_quiet_argument, add_tasks_argument, apply_threads
from mcl.cli.common import add_eval_arguments as common_eval_arguments
from mcl.cli.common import choice_argument
from mcl.cli.main import run_cli
from mcl.cli.text_flags import add_text_arguments, text_of
from mcl.errors import MclError

if TYPE_CHECKING:  # torch, peft and pandas load only when a command runs
    import pandas as pd

    from mcl.adapters import AdapterState



def points_arg(text: str) -> int | str:
    """`--points`: a count of equally spaced t values, or `auto` (adaptive barrier search)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of points or 'auto', got {text!r}") from None


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by barrier, plane and barrier-matrix: base model, tasks, evaluation settings, device and dtype."""
    add_model_argument(p)
    add_tasks_argument(p, help="built-in task names, `mcl-suite` or task dirs; default: exactly the data the "
                               "checkpoints were trained on (recorded in their mcl.json)")
    common_eval_arguments(p)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the sweep cache")
    add_quiet_argument(p)
    add_text_arguments(p)
    add_device_args(p)


MAX_POINTS = 1001
BARRIER_FILES = ("barrier.json", "path.csv", "path.png", "path.html", "attribution.csv", "attribution.png",
                 "plotly.min.js")  # the last: shared by the HTML of earlier versions, now self-contained


def check_eval_args(args: argparse.Namespace) -> None:
    """Refuse bad shared flags and an unwritable or non-directory --out before any work starts."""
    from mcl.eval.evaluate import check_eval_settings
    from mcl.io import check_output
    from mcl.lock import hold_output

    check_eval_settings(args.batch_size, args.max_len, args.limit)
    if args.threads is not None and args.threads < 1:
        raise MclError(f"--threads must be >= 1, got {args.threads}")
    points = getattr(args, "points", None)
    if isinstance(points, int) and not 2 <= points <= MAX_POINTS:
        raise MclError(f"--points: a sweep needs at least 2 points and at most {MAX_POINTS}, got {points}")
    if args.model is not None:
        check_model_arg(args.model)
    if getattr(args, "out", None):
        check_output(args.out, "dir")
        hold_output(args.out, f"--out {args.out}")  # one writer per output dir, until the command ends


def check_model_arg(name: str) -> None:
    """A --model that names a local path must be an existing model dir (hub ids and names are checked on load)."""
    from mcl.models import NAMED_MODELS

    if not name:
        raise MclError("--model is empty")
    p = Path(name).expanduser()
    if name not in NAMED_MODELS and p.exists() and not (p / "config.json").is_file():
        raise MclError(f"--model {name}: not a model dir (no config.json)")


def apply_base_override(states: Sequence[AdapterState], base: str | None) -> None:
    """With --model, the adapters are taken to sit on that model: their recorded base ids are not compared."""
    if base:
        for s in states:
            s.meta["base_model"] = base


def base_of(states: Sequence[AdapterState], override: str | None) -> str:
    """The base model to load: `--model`, else the one the checkpoints name."""
    if override:
        return override
    named = [s.base_model for s in states if s.base_model]
    if not named:
        raise MclError(f"{states[0].label} does not name its base model: pass --model MODEL")
    return named[0]


def tasks_of(states: Sequence[AdapterState], override: Sequence[str] | None) -> list:
    """The tasks to evaluate: `--tasks`, else the data recorded in each checkpoint's mcl.json (in order, once each).

    Recorded tasks come back as `Task`s whose content hash was checked (gone or changed data is a one-line
    error); checkpoints from before data records name their task only and resolve by name.
    """
    from mcl.data.load import load_recorded

    if override:
        return list(override)
    found: dict[str, Any] = {}
    for s in states:
        for rec in s.meta.get("tasks") or []:
            found.setdefault(rec.get("name") if isinstance(rec, dict) else repr(rec), (rec, s.label))
        if not s.meta.get("tasks") and s.meta.get("task"):
            found.setdefault(s.meta["task"], None)
    if not found:
        raise MclError("no tasks to evaluate: pass --tasks TASK ... (the checkpoints' mcl.json name no task)")
    return [name if entry is None else load_recorded(entry[0], entry[1]) for name, entry in found.items()]


def load_model_and_tasks(args: argparse.Namespace, states: Sequence[AdapterState], split: str | None = None,
                         extra: Sequence[AdapterState] = ()):
    """(model, tokenizer, task evaluators) for the checkpoints, honouring the shared flags and their text format.

    Every adapter (`states` and the `extra` ones, e.g. control points) is checked against the loaded base
    model: the modules its config targets there, and their shapes.
    """
    model, tokenizer, (tasks,) = load_model_and_task_groups(args, [states], split, extra)
    return model, tokenizer, tasks


def load_model_and_task_groups(args: argparse.Namespace, groups: Sequence[Sequence[AdapterState]],
                               split: str | None = None, extra: Sequence[AdapterState] = ()):
    """(model, tokenizer, evaluators per group of checkpoints): one base model, each task prepared once.

    The groups (e.g. the pairs of one `mcl-barrier` call) must share their base model; every adapter of
    them and of `extra` is checked against it as in `load_model_and_tasks`, and the tasks' max_len follows
    `mcl.cli.max_len` over all their checkpoints' records.
    """
    from mcl.adapters.compat import check_fits
    from mcl.analysis.sweep import evaluators
    from mcl.cli.max_len import model_context, task_max_lens
    from mcl.data.load import load_tasks
    from mcl.models import load_base
    from mcl.train.records import recorded_max_len

    apply_threads(args)
    states = [s for g in groups for s in g]
    bases = list(dict.fromkeys(base_of(g, args.model) for g in groups))
    if len(bases) > 1:
        raise MclError(f"the checkpoints sit on different base models ({', '.join(bases)}): run them separately")
    named = [tasks_of(g, args.tasks) for g in groups]
    unique = {_task_key(t): t for names in named for t in names}
    model, tokenizer = load_base(bases[0], **model_kwargs(args))
    for state in [*states, *extra]:
        check_fits(state, model)
    text = text_of(args, [s.meta for s in states])
    split = split or args.split
    # `mcl-suite` is eight tasks; loss only (no --metric): bare TRACE dirs without task.json do
    loaded = {key: load_tasks([entry], loss_only=not args.metric) for key, entry in unique.items()}
    flat = [t for ts in loaded.values() for t in ts]
    max_lens = task_max_lens(args.max_len, [recorded_max_len(s.path, s.meta) for s in states], flat, tokenizer,
                             split, args.limit, text, args.metric, model_context(model))
    built, evals = {}, iter(evaluators(tokenizer, flat, split, args.batch_size, max_lens, args.limit, text))
    for key, ts in loaded.items():
        built[key] = [next(evals) for _ in ts]
    return model, tokenizer, [[e for t in names for e in built[_task_key(t)]] for names in named]


def _task_key(task: Any) -> str:
    """What identifies a task entry of `tasks_of`: a name or dir as given, else the recorded data's hash."""
    return task if isinstance(task, str) else f"{task.name}@{task.hash}"


def cache_arg(args: argparse.Namespace) -> bool:
    """Whether to use the sweep cache."""
    return not args.no_cache


def write_csv(frame: pd.DataFrame, dest: Path) -> None:
    """Write a DataFrame as CSV atomically."""
    from mcl.io import atomic_path

    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False)


def read_nodes(args: argparse.Namespace, a_dir: str,
               b_dir: str) -> tuple[AdapterState, list[AdapterState], AdapterState, dict[str, Any]]:
    """Endpoints, control points (PEFT dirs or one `mcl curve fit` dir) and the curve's recorded path/space."""
    from mcl.adapters import read_adapter
    from mcl.paths.fit import CURVE_FILE, read_curve

    a, b = read_adapter(a_dir), read_adapter(b_dir)
    dirs, curve = list(args.controls or []), {}
    if len(dirs) == 1 and (Path(dirs[0]) / CURVE_FILE).is_file():
        curve = read_curve(dirs[0])
        dirs = curve["controls"]
    controls = [read_adapter(d) for d in dirs]
    apply_base_override([a, *controls, b], args.model)
    return a, controls, b, curve


def barrier_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per task: endpoint losses, the loss barriers and (when scored) the metric barrier."""
    import pandas as pd

    rows = []
    for task, r in result["tasks"].items():
        row = {"task": task, "loss(0)": r["loss"][0], "loss(1)": r["loss"][-1], **r["barrier"]["loss"]}
        if "ci" in r:
            row["ci_low"], row["ci_high"] = r["ci"]["loss"]["max_minus_linear"]
        if r["metric"] is not None:
            row.update({r["metric_name"] + "(0)": r["metric"][0], r["metric_name"] + "(1)": r["metric"][-1],
                        "metric_drop": r["barrier"]["metric"]["max_minus_linear"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")


def pairs_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The pairs to sweep: consecutive checkpoints (A B C … → A→B, B→C, …) or the lines of `--pairs FILE`."""
    import shlex

    if args.pairs is None:
        if len(args.checkpoints) < 2:
            raise MclError("give two checkpoints (CKPT_A CKPT_B), a chain (A B C …) or --pairs FILE")
        pairs = list(zip(args.checkpoints, args.checkpoints[1:]))
    else:
        if args.checkpoints:
            raise MclError("give checkpoints or --pairs FILE, not both")
        try:
            lines = Path(args.pairs).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise MclError(f"--pairs {args.pairs}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        pairs = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                fields = shlex.split(line)
            except ValueError as e:
                raise MclError(f"--pairs {args.pairs}: line {number}: {e}") from None
            if len(fields) != 2:
                raise MclError(f"--pairs {args.pairs}: line {number}: expected two checkpoint dirs, got {len(fields)}")
            pairs.append((fields[0], fields[1]))
        if not pairs:
            raise MclError(f"--pairs {args.pairs}: no pairs in it (one `CKPT_A CKPT_B` per line)")
    if len(pairs) > 1 and args.controls:
        raise MclError("--controls belong to one pair: give exactly two checkpoints with --controls")
    return pairs


PAIR_DIR = re.compile(r"\d+_[^/]*--[^/]*")  # the sub-dirs of --out that several pairs write


def earlier_pair_dirs(out: Path) -> list[str]:
    """The pair sub-dirs an earlier several-pairs invocation listed in `out/pairs.json` (only those: never a user's)."""
    import json

    try:
        index = json.loads((out / "pairs.json").read_text(encoding="utf-8"))["pairs"]
        names = [entry["dir"] for entry in index]
    except (OSError, ValueError, KeyError, TypeError):  # absent or not ours: nothing to take over
        return []
    return [n for n in names if isinstance(n, str) and PAIR_DIR.fullmatch(n) and (out / n).is_dir()]


def pair_dir(k: int, a: str, b: str) -> str:
    """The sub-dir of --out for the k-th of several pairs: `<k>_<name of A>--<name of B>`."""
    return f"{k}_{Path(a).resolve().name}--{Path(b).resolve().name}"


def run(args: argparse.Namespace) -> int:
    """Sweep every pair's path in one process (model loaded once), print the tables, write the outputs."""
    from mcl.analysis import AdaptiveSearch, Bootstrap, t_grid
    from mcl.analysis.distributed import ranks
    from mcl.io import staged_outputs, write_json_atomic

    check_eval_args(args)
    pairs = pairs_of(args)
    points = AdaptiveSearch(max_points=args.max_points) if args.points == "auto" else t_grid(args.points)
    settings = Bootstrap(args.ci) if args.ci is not None else None
    nodes = [read_nodes(args, a, b) for a, b in pairs]
    paths = [make_pair_path(args, *n) for n in nodes]
    model, _, tasks = load_model_and_task_groups(args, [[a, b] for a, _, b, _ in nodes],
                                                 extra=[c for _, controls, _, _ in nodes for c in controls])

    def sweep_pair(k: int, dest: Path | None) -> dict[str, Any]:
        (a_dir, b_dir), (a, controls, b, _), path = pairs[k], nodes[k], paths[k]
        header = {"a": a_dir, "b": b_dir, "base": base_of([a, b], args.model), "path": path.name,
                  "space": path.space.name, "controls": [c.label for c in controls], "align": args.align,
                  "split": args.split, "max_len": {t.task.name: t.max_len for t in tasks[k]}}
        return barrier_pair(args, header, path, model, tasks[k], points, settings, dest)

    out = Path(args.out) if args.out and ranks().main else None  # other ranks share the sweeps, not the writing
    # what one or several pairs write here, so that a new invocation's outputs never mix with an earlier one's
    owned = [*BARRIER_FILES, "pairs.json", *(earlier_pair_dirs(out) if out else [])]
    if len(pairs) == 1:
        if out is None:
            sweep_pair(0, None)
            return 0
        with staged_outputs(out, "barrier.json", owned) as stage:
            attributed = "attribution" in sweep_pair(0, stage)
        print(f"wrote {out}/barrier.json, path.csv, path.png, path.html"
              + (", attribution.csv/png" if attributed else ""))
        return 0
    with staged_outputs(out, "pairs.json", owned) if out else nullcontext() as stage:
        index = []
        for k, (a_dir, b_dir) in enumerate(pairs):
            if ranks().main:
                print(f"\n== pair {k}: {a_dir} → {b_dir}")
            dest = stage / pair_dir(k, a_dir, b_dir) if out else None
            if dest:
                dest.mkdir()
            result = sweep_pair(k, dest)
            index.append({"a": a_dir, "b": b_dir, "dir": dest.name if dest else None,
                          "resolved": all(r.get("resolved", True) for r in result["tasks"].values())})
        if out:
            write_json_atomic(stage / "pairs.json", {"pairs": index})
    if out:
        print(f"wrote {out}/pairs.json and one sub-dir per pair ({', '.join(e['dir'] for e in index)})")
    return 0


def make_pair_path(args: argparse.Namespace, a: AdapterState, controls: list[AdapterState], b: AdapterState,
                   curve: dict[str, Any]):
    """The path of one pair from --path/--space/--align (or the fitted curve's record)."""
    from mcl.paths import align, get_space, make_path, path_class

    space = get_space(args.space or curve.get("space", "factors"))
    kind = args.path or curve.get("path", "linear")
    if path_class(kind).max_nodes != 2 and not controls:
        raise MclError(f"a {kind} path needs control points: pass --controls DIR ... (fit them with `mcl curve fit`)")
    path = make_path(kind, [a, *controls, b], space)
    if args.align != "none":  # after the compatibility checks of make_path
        path = make_path(kind, align(path.nodes, args.align), space)
    return path


def barrier_pair(args: argparse.Namespace, header: dict[str, Any], path, model, tasks, points, settings,
                 out: Path | None) -> dict[str, Any]:
    """Sweep one path, print its barrier table, write its outputs into `out` (barrier.json last); returns that JSON.

    `header` holds barrier.json's fields about the pair (a, b, base, path, space, controls, align, split,
    max_len). Under torchrun every rank sweeps (sharing the work); only the main one prints and writes.
    """
    from mcl.analysis import bootstrap_barriers, path_barriers, sweep
    from mcl.analysis.bootstrap import with_bands
    from mcl.analysis.distributed import ranks
    from mcl.io import write_json_atomic

    frame = sweep(path, model, tasks, points, args.metric, cache_arg(args), progress=not args.quiet,
                  per_example=settings is not None, merged=args.merge)
    verdicts = frame.attrs.get("resolved", {})
    evaluated = sorted(set(frame["t"]))
    result = {**header, "points": evaluated, "tasks": path_barriers(frame)}
    for task, verdict in verdicts.items():
        result["tasks"][task]["resolved"] = verdict["resolved"]
        if not verdict["resolved"]:
            result["tasks"][task]["reason"] = verdict["reason"]
    if settings:
        cis = bootstrap_barriers(frame, settings)
        for task, ci in cis.items():
            result["tasks"][task]["ci"] = ci
        frame = with_bands(frame, cis)
    attribution = None
    if args.attribute:
        from mcl.analysis.attribution import attribute

        grid = points if isinstance(points, list) else DEFAULT_POINTS
        attribution = attribute(path, model, tasks, args.attribute, args.hold, grid, cache_arg(args), args.merge)
        result["attribution"] = {"by": args.attribute, "hold": args.hold, "rows": attribution.to_dict("records")}
    if not ranks().main:  # the other processes shared the work; the main one prints and writes
        return result
    how = str(len(evaluated))
    if args.points == "auto":
        result["adaptive"] = {**vars(points), "evaluated": {k: v["evaluated"] for k, v in verdicts.items()}}
        how = "adaptive search: " + ", ".join(f"{k} {n}" for k, n in result["adaptive"]["evaluated"].items())
    print(f"{path.name} path in {path.space.name} space, {how} points, {args.split} split")
    print(barrier_table(result).to_string(float_format=lambda x: f"{x:.4f}"))
    for task, verdict in verdicts.items():
        if not verdict["resolved"]:
            print(f"not resolved: {task}: {verdict['reason']}")
    if attribution is not None:
        print(f"attribution by {args.attribute} (the rest held at {args.hold}): loss barrier when only that group moves")
        print(attribution.pivot_table(index="group", columns="task", values="max_minus_linear", sort=False)
              .to_string(float_format=lambda x: f"{x:.4f}"))
    if out:  # a staging dir (the caller swaps it in): barrier.json last
        from mcl.analysis.plots import plot_path  # matplotlib and plotly load only to draw

        write_csv(frame, out / "path.csv")
        title = f"{Path(header['a']).name} → {Path(header['b']).name} ({path.name}, {path.space.name})"
        plot_path(frame, out / "path.png", out / "path.html", title=title)
        if attribution is not None:
            from mcl.analysis.attribution import plot_attribution

            write_csv(attribution, out / "attribution.csv")
            plot_attribution(attribution, out / "attribution.png", title=f"{title}, by {args.attribute}")
        write_json_atomic(out / "barrier.json", result)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `mcl-barrier` / `mcl barrier`."""
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="adapters (PEFT dirs): A B for one path, or a chain A B C … for the paths A→B, B→C, … "
                        "(one process, the base model loaded once)")
    p.add_argument("--pairs", metavar="FILE",
                   help="instead of CKPTs: a text file with one pair `CKPT_A CKPT_B` per line (# comments); with "
                        "several pairs, --out gets one sub-dir per pair (`<k>_<A>--<B>`) and a pairs.json index")
    choice_argument(p, "--path", "paths", "path between the adapters", default_text="linear, or the fitted curve's")
    choice_argument(p, "--space", "spaces", "interpolation space", default_text="factors, or the fitted curve's")
    p.add_argument("--controls", nargs="+", metavar="DIR",
                   help="control points of a bezier/polychain path: PEFT dirs, or one `mcl curve fit` output dir")
    p.add_argument("--points", type=points_arg, default=DEFAULT_POINTS,
                   help=f"t values from 0 to 1 (default {DEFAULT_POINTS}), or `auto`: a coarse grid, then the two "
                        "highest bumps above the chord refined until the barrier changes by < 1%%; thin evidence "
                        "is reported as `resolved: false` with the reason")
    p.add_argument("--max-points", type=int, default=15, metavar="N",
                   help="with --points auto: evaluations per task at most (default 15)")
    p.add_argument("--align", default="none", choices=["none", "svd", "procrustes"],
                   help="put the LoRA factors in one gauge before interpolating (same ΔW per module; changes "
                        "factor-space paths only; default none)")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                   help="run plain-LoRA factor/delta points as W0 + ΔW(t) in the base weights, computed in fp32 "
                        "(the cost of a plain forward; same losses as PEFT's LoRA layers to float rounding; W0 "
                        "restored exactly; default); --no-merge uses PEFT's unmerged LoRA layers (less memory on "
                        "bf16 bases)")
    p.add_argument("--ci", type=float, metavar="LEVEL",
                   help="bootstrap confidence intervals over eval examples at this level (e.g. 0.95) for every "
                        "loss barrier and loss point: `ci` fields in barrier.json, bands in the plots")
    p.add_argument("--attribute", choices=["layers", "modules"],
                   help="also the barrier with one group of modules moving along the path at a time (table, "
                        "attribution.csv/png); factors or delta space")
    p.add_argument("--hold", default="a", choices=["a", "mid", "b"],
                   help="with --attribute: where the other groups stay (endpoint a, the path's middle, endpoint b)")
    p.add_argument("--out", metavar="DIR", help="write barrier.json, path.csv, path.png, path.html here (several "
                                                "pairs: in one sub-dir per pair)")
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
