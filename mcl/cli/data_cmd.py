"""`mcl data build [--out DIR] [--seed N] [--train N --eval N --test N]` and `mcl data show TASK`."""

from __future__ import annotations

import argparse
import json

from mcl.data.suite.common import Sizes


def _build(args: argparse.Namespace) -> int:
    from mcl.data.suite import SUITE, build_suite

    out = build_suite(args.out, args.seed, Sizes(args.train, args.eval, args.test))
    print(f"wrote {len(SUITE)} tasks ({args.train}/{args.eval}/{args.test} train/eval/test) to {out}")
    for name in SUITE:
        spec = json.loads((out / name / "task.json").read_text(encoding="utf-8"))
        print(f"  {name:<9} {spec['metric']:<16} chance {spec['chance']:.3f}  {spec['answer_format']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from mcl.data.load import load_task

    task = load_task(args.task)
    print(json.dumps(task.spec.to_json(), indent=2))
    for e in task.split(args.split)[: args.n]:
        print(f"--- prompt\n{e.prompt}\n--- answer\n{e.answer}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl data ...`."""
    p = sub.add_parser("data", help="build the offline task suite and inspect tasks")
    dsub = p.add_subparsers(dest="data_command", required=True)
    build = dsub.add_parser("build", help="write the 8-task suite `mcl-suite` as TRACE-format dirs")
    build.add_argument("--out", help="output dir (default: mcl's cache, where built-in task names resolve)")
    build.add_argument("--seed", type=int, default=0, help="generation seed (same seed, same bytes)")
    defaults = Sizes()
    for split in ("train", "eval", "test"):
        build.add_argument(f"--{split}", type=int, default=defaults.of(split), help=f"{split} examples per task")
    build.set_defaults(func=_build)
    show = dsub.add_parser("show", help="print a task's spec and a few examples")
    show.add_argument("task", help="task dir or built-in task name")
    show.add_argument("--split", default="train", choices=["train", "eval", "test"], help="split to show: %(choices)s (default train)")
    show.add_argument("-n", type=int, default=3, help="examples to print")
    show.set_defaults(func=_show)
