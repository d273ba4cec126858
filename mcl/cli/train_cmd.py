"""`mcl train [CONFIG.yaml] [key=value ...] [--resume] [--quiet]`: run or resume a continual-learning run.

Overrides (`key=value`, `--key=value` or `--set key=value`) may stand anywhere after `train`. With no
config file, a small default runs: the tiny model on three suite tasks for a few steps each.
"""

from __future__ import annotations

import argparse
import json
import os

from mcl.cli.common import RegistryNames
from mcl.cli.device_args import add_device_args
from mcl.errors import MclError

# the small run `mcl train` makes without a config file; later overrides win
QUICK_DEFAULTS = ["train.steps_per_task=20", "train.warmup=2", "eval.max_examples=20"]


def _train(args: argparse.Namespace) -> int:
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir, train

    overrides = list(args.overrides)
    if args.config is None:
        print(f"no config file: a small default run ({' '.join(QUICK_DEFAULTS)}); pass CONFIG.yaml for a real one")
        overrides = [*QUICK_DEFAULTS, *overrides]
    if args.dtype:
        overrides.append(f"model_dtype={args.dtype}")
    if args.device is not None:  # accelerate places the processes; --device only picks cpu or the GPU(s)
        from mcl.cli.device_args import resolve_device

        if resolve_device(args.device) not in ("cpu", "cuda"):
            raise MclError("mcl train takes --device cpu or cuda; pick GPUs with CUDA_VISIBLE_DEVICES")
        if args.device == "cpu":
            os.environ["ACCELERATE_USE_CPU"] = "1"
    cfg = load_config(args.config, overrides)
    run_dir = resolve_run_dir(cfg)
    if (run_dir / "state").exists():
        print(f"resuming {run_dir} (same config and data)")
    run_dir = train(cfg, progress_bar=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    print(f"run: {run_dir}")
    for key in ("score", "loss"):
        if key in summary:
            m = summary[key]
            print(f"{key:5s}  OP {m['OP']:.4f}  BWT {m['BWT']:.4f}  FWT {m['FWT']:.4f}  forgetting {m['forgetting']:.4f}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `mcl train`."""
    p.add_argument("config", nargs="?", metavar="CONFIG.yaml",
                   help="YAML run config, e.g. configs/tiny-suite-seq.yaml (omit for a small default run)")
    overrides = p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                               help="override a config key (dotted, e.g. train.lr=5e-4 or method=NAME with NAME one "
                                    "of %(names)s); bare key=value and --key=value work too")
    overrides.names = RegistryNames("methods")
    p.add_argument("--resume", action="store_true", help="accepted for clarity: a run with this config and data always resumes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_args(p, dtype_default=None)
    p.set_defaults(func=_train)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl train`."""
    p = sub.add_parser("train", help="run (or resume) a continual-learning run from a YAML config",
                       usage="mcl train [-h] [CONFIG.yaml] [KEY=VALUE ...] [--resume] [--quiet] [--device D] [--dtype T]",
                       description="Overrides: key=value, --key=value or --set key=value with dotted keys, in any "
                                   "order, e.g. train.lr=5e-4 method=er.")
    add_arguments(p)


def normalize_argv(argv: list[str]) -> list[str]:
    """After `train`, turn every override (`key=value`, `--key=value`) into `--set key=value`, so they go anywhere."""
    if not argv or argv[0] != "train":
        return argv
    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe)
    known = set(probe._option_string_actions) | {"-h", "--help"}
    out = [argv[0]]
    for a in argv[1:]:
        if a.startswith("--") and "=" in a and a.split("=")[0] not in known:
            out += ["--set", a[2:]]
        elif out[-1] != "--set" and not a.startswith("-") and "=" in a and not a.endswith((".yaml", ".yml")):
            out += ["--set", a]
        else:
            out.append(a)
    return out
