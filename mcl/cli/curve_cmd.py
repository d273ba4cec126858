"""`mcl curve fit CKPT_A CKPT_B --tasks TASK ... --out DIR`: fit a low-loss Bezier/PolyChain curve between two adapters.

The control points are trained on the tasks' train split (Garipov et al. 2018); the fit checkpoints
into DIR and resumes from it; DIR ends up holding `control-<i>/` PEFT dirs and `curve.json` (last).
Evaluate the result with `mcl-barrier CKPT_A CKPT_B --controls DIR`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mcl.cli.barrier_cmd import apply_base_override, base_of, check_model_arg, tasks_of
from mcl.cli.common import (add_batch_arguments, add_model_argument, add_quiet_argument, add_tasks_argument,
                            add_threads_argument, apply_threads, choice_argument)
from mcl.cli.device_args import add_device_args, model_kwargs
from mcl.cli.text_flags import add_text_arguments, text_of
from mcl.errors import MclError


def _fit(args: argparse.Namespace) -> int:
    from mcl.adapters import read_adapter
    from mcl.adapters.compat import check_fits
    from mcl.analysis.objective import TaskObjective
    from mcl.cli.max_len import model_context, task_max_lens
    from mcl.data.load import load_tasks
    from mcl.io import check_output
    from mcl.lock import hold_output
    from mcl.models import load_base
    from mcl.paths.fit import FitConfig, fit_curve
    from mcl.train.records import recorded_max_len

    for name in ("steps", "batch_size", "max_len", "controls", "checkpoint_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise MclError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)) or not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        raise MclError(f"--lr must be > 0 and --weight-decay >= 0 (got {args.lr}, {args.weight_decay})")
    if args.model is not None:
        check_model_arg(args.model)
    check_output(args.out, "dir")
    hold_output(args.out, f"--out {args.out}")  # one fit per checkpoint dir
    config = FitConfig(path=args.path, space=args.space, controls=args.controls, steps=args.steps, lr=args.lr,
                       weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=args.checkpoint_every)
    apply_threads(args)
    a, b = read_adapter(args.a), read_adapter(args.b)
    apply_base_override([a, b], args.model)
    tasks = load_tasks(tasks_of([a, b], args.tasks), loss_only=True)  # fitting reads losses only
    model, tokenizer = load_base(base_of([a, b], args.model), **model_kwargs(args))
    for state in (a, b):
        check_fits(state, model)
    text = text_of(args, [a.meta, b.meta])
    max_len = max(task_max_lens(args.max_len, [recorded_max_len(s.path, s.meta) for s in (a, b)], tasks, tokenizer,
                                "train", None, text, False, model_context(model)))
    objective = TaskObjective(tokenizer, tasks, "train", args.batch_size, max_len, args.seed, text)
    _, history = fit_curve(a, b, model, objective.loss, config, Path(args.out), progress=not args.quiet)
    tail = history[-min(20, len(history)):]
    print(f"fitted {args.path} ({args.space}, {args.controls} control point(s)) in {len(history)} steps; "
          f"train loss over the last {len(tail)} steps: {sum(tail) / len(tail):.4f}")
    print(f"wrote {args.out}/curve.json; evaluate with: mcl-barrier {args.a} {args.b} --controls {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl curve fit`."""
    p = sub.add_parser("curve", help="fit low-loss curves between adapters")
    csub = p.add_subparsers(dest="curve_command", required=True)
    f = csub.add_parser("fit", help="train the control points of a Bezier/PolyChain path (endpoints fixed)")
    f.add_argument("a", metavar="CKPT_A", help="first endpoint adapter (PEFT dir), kept fixed")
    f.add_argument("b", metavar="CKPT_B", help="second endpoint adapter (PEFT dir), kept fixed")
    f.add_argument("--out", required=True, metavar="DIR", help="checkpoint and output dir (a rerun resumes)")
    add_model_argument(f)
    add_tasks_argument(f, help="tasks whose train data the curve is fitted on; "
                               "default: the tasks named in the checkpoints' mcl.json")
    choice_argument(f, "--path", "paths", "curve family", default="bezier", only=("bezier", "polychain"))
    choice_argument(f, "--space", "spaces", "space the control points live in", default="factors",
                    only=("factors", "delta"))
    f.add_argument("--controls", type=int, default=1, metavar="N", help="number of control points (default 1)")
    f.add_argument("--steps", type=int, default=200, metavar="N", help="optimisation steps (default 200)")
    f.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    f.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default 0)")
    add_batch_arguments(f, batch_size=8, batch_help="examples per task per step")
    f.add_argument("--seed", type=int, default=0, help="seed of the t samples and batches (default 0)")
    f.add_argument("--checkpoint-every", type=int, default=25, metavar="N", help="steps between checkpoints (default 25)")
    add_threads_argument(f)
    add_quiet_argument(f)
    add_text_arguments(f)
    add_device_args(f)
    f.set_defaults(func=_fit)
