"""`mcl data build|show|check|template|new`: the suite's recipe, inspecting tasks, validating TRACE downloads, and a
new task dir to fill in."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mcl.errors import MclError


def _build(args: argparse.Namespace) -> int:
    from mcl.data.suite import SHIPPED_DIR, SUITE, build_suite, compare_with_shipped, default_suite_dir, is_shipped
    from mcl.data.suite.common import Sizes
    from mcl.io import check_output
    from mcl.lock import hold_output

    defaults = Sizes()
    sizes = Sizes(*(getattr(args, s) if getattr(args, s) is not None else defaults.of(s) for s in ("train", "eval", "test")))
    if min(sizes.train, sizes.eval, sizes.test) < 1:
        raise MclError(f"--train, --eval and --test must be >= 1 (got {sizes.train}, {sizes.eval}, {sizes.test})")
    if args.out:
        check_output(args.out, "dir")
    dest = args.out or default_suite_dir(args.seed, sizes)
    hold_output(dest, f"suite dir {dest}")  # one build per dir
    out = build_suite(args.out, args.seed, sizes)
    print(f"wrote {len(SUITE)} tasks ({sizes.train}/{sizes.eval}/{sizes.test} train/eval/test) to {out}")
    for name in SUITE:
        spec = json.loads((out / name / "task.json").read_text(encoding="utf-8"))
        print(f"  {name:<9} {spec['metric']:<16} chance {spec['chance']:.3f}  {spec['answer_format']}")
    if not is_shipped(args.seed, sizes):
        print(f"the shipped suite ({SHIPPED_DIR}) is seed 0 at the default sizes: nothing to compare; "
              f"use this build by its path ({out}/TASK)")
    elif differ := compare_with_shipped(out):
        print(f"differs from the shipped suite in {len(differ)} files ({', '.join(differ)}); built-in task names "
              f"keep using the shipped copy {SHIPPED_DIR}")
    else:
        print(f"byte-identical to the shipped suite {SHIPPED_DIR}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from mcl.data.load import load_task

    task = load_task(args.task)
    print(json.dumps(task.spec.to_json(), indent=2, ensure_ascii=False))
    for e in task.split(args.split)[: args.n]:
        print(f"--- prompt\n{e.prompt}\n--- answer\n{e.answer}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mcl.data.load import load_task
    from mcl.data.task import SPLITS

    problems = 0
    for d in args.dirs:
        try:
            task = load_task(d)
            missing = [s for s in SPLITS if s not in task.available_splits()]
            sizes = ", ".join(f"{s} {len(task.split(s))}" for s in task.available_splits())
            if missing:
                raise MclError(f"{d}: missing split(s) {', '.join(missing)} ({'/'.join(missing)}.json); has {sizes}")
            print(f"ok  {d}: {task.name}, {task.metric}, max_new_tokens {task.spec.max_new_tokens}; {sizes}")
        except MclError as e:
            problems += 1
            print(f"BAD {e}")
    if problems:
        raise MclError(f"{problems} of {len(args.dirs)} task dirs have problems (listed above)")
    return 0


def _template(args: argparse.Namespace) -> int:
    from mcl.data.task import SPEC_FILE, TEMPLATE_DIR, trace_templates

    if args.name not in trace_templates():
        raise MclError(f"unknown TRACE template {args.name!r}; templates: {', '.join(trace_templates())}")
    src = TEMPLATE_DIR / f"{args.name}.json"
    if args.dir is None:
        print(src.read_text(encoding="utf-8"), end="")
        return 0
    dest = Path(args.dir) / SPEC_FILE
    if not Path(args.dir).is_dir():
        raise MclError(f"{args.dir}: not a directory")
    if dest.exists() and not args.force:
        raise MclError(f"{dest} exists; pass --force to overwrite it")
    shutil.copyfile(src, dest)
    print(f"wrote {dest} ({args.name})")
    return 0


NEW_TASK_ROWS = {  # one example row per split, to be replaced by the user's data
    "train": [{"prompt": "Is this review positive or negative?\nReview: A delight from start to finish.\nAnswer:",
               "answer": "positive"}],
    "eval": [{"prompt": "Is this review positive or negative?\nReview: Two hours I will not get back.\nAnswer:",
              "answer": "negative"}],
    "test": [{"prompt": "Is this review positive or negative?\nReview: Warm, funny and wise.\nAnswer:",
              "answer": "positive"}],
}


def _new(args: argparse.Namespace) -> int:
    from mcl.data.task import SPEC_FILE, load_task_dir
    from mcl.io import atomic_path, check_name, check_output

    check_name(args.name, "task name")
    dest = check_output(args.dir, "dir")
    if dest.exists() and any(dest.iterdir()):
        raise MclError(f"{dest} exists and is not empty; mcl data new writes a new task dir (pick another DIR)")
    spec = {"name": args.name, "metric": args.metric, "max_new_tokens": args.max_new_tokens,
            "description": "what the task asks, in one line (documentation only: not part of the data hash)"}
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        for split, rows in NEW_TASK_ROWS.items():
            (tmp / f"{split}.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        load_task_dir(tmp).split("train")  # what was written is a valid task
    print(f"wrote {dest}: task.json ({args.metric}, max_new_tokens {args.max_new_tokens}) and one example row in each "
          f"of train/eval/test.json; replace them with your data (a JSON list of {{prompt, answer}}, or .jsonl), "
          f"then `mcl data check {dest}`")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl data ...`."""
    p = sub.add_parser("data", help="the offline task suite, task inspection and TRACE task dirs")
    dsub = p.add_subparsers(dest="data_command", required=True)
    build = dsub.add_parser("build", help="rebuild the 8-task suite `mcl-suite` (the recipe of the shipped copy)")
    build.add_argument("--out", help="output dir (default: mcl's cache)")
    build.add_argument("--seed", type=int, default=0, help="generation seed (same seed, same bytes)")
    for split in ("train", "eval", "test"):
        build.add_argument(f"--{split}", type=int, help=f"{split} examples per task (default: the suite's size)")
    build.set_defaults(func=_build)
    show = dsub.add_parser("show", help="print a task's spec and a few examples")
    show.add_argument("task", help="task dir or built-in task name")
    show.add_argument("--split", default="train", choices=["train", "eval", "test"], help="split to show: %(choices)s (default train)")
    show.add_argument("-n", type=int, default=3, help="examples to print")
    show.set_defaults(func=_show)
    check = dsub.add_parser("check", help="validate task dirs (e.g. a TRACE download): splits, task.json, rows")
    check.add_argument("dirs", nargs="+", metavar="DIR", help="task dirs to validate (e.g. data/TRACE/*)")
    check.set_defaults(func=_check)
    template = dsub.add_parser("template", help="print a TRACE task.json template, or copy it into a task dir")
    template.add_argument("name", help="C-STANCE, FOMC, MeetingBank, Py150, ScienceQA, NumGLUE-cm, NumGLUE-ds, 20Minuten")
    template.add_argument("dir", nargs="?", help="task dir to write task.json into")
    template.add_argument("--force", action="store_true", help="overwrite an existing task.json")
    template.set_defaults(func=_template)
    new = dsub.add_parser("new", help="start a task dir: task.json and train/eval/test.json with one example row each")
    new.add_argument("name", help="task name (one path component)")
    new.add_argument("dir", metavar="DIR", help="the new task dir (absent or empty)")
    new.add_argument("--metric", default="accuracy", help="task metric (mcl list names them; default accuracy)")
    new.add_argument("--max-new-tokens", type=int, default=16, metavar="N",
                     help="generation length for the metric (default 16)")
    new.set_defaults(func=_new)
