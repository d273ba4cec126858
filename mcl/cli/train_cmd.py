"""`mcl train CONFIG.yaml [key=value ...] [--resume]`: run or resume a continual-learning run."""

from __future__ import annotations

import argparse
import json
import os

from mcl.cli.device_args import add_device_args
from mcl.errors import MclError


def _train(args: argparse.Namespace) -> int:
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir, train

    overrides = [o for o in args.overrides if o]
    config = args.config
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        config, overrides = None, [config, *overrides]
    if args.dtype:
        overrides.append(f"model_dtype={args.dtype}")
    if args.device is not None:  # accelerate places the processes; --device only picks cpu or the GPU(s)
        from mcl.cli.device_args import resolve_device

        if resolve_device(args.device) not in ("cpu", "cuda"):
            raise MclError("mcl train takes --device cpu or cuda; pick GPUs with CUDA_VISIBLE_DEVICES")
        if args.device == "cpu":
            os.environ["ACCELERATE_USE_CPU"] = "1"
    cfg = load_config(config, overrides)
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



def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl train`."""
    p = sub.add_parser("train", help="run (or resume) a continual-learning run from a YAML config",
                       description="Overrides: key=value or --key=value with dotted keys, e.g. train.lr=5e-4 method=er.")
    p.add_argument("config", nargs="?", help="YAML config (omit to use defaults + overrides)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--resume", action="store_true", help="accepted for clarity: a run with this config and data always resumes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_args(p, dtype_default=None)
    p.set_defaults(func=_train)


def normalize_argv(argv: list[str]) -> list[str]:
    """Turn `--key=value` overrides after `train` into positional `key=value` (argparse-friendly)."""
    if not argv or argv[0] != "train":
        return argv
    known = {"--resume", "--quiet", "--device", "--dtype", "-h", "--help"}
    return [a[2:] if a.startswith("--") and "=" in a and a.split("=")[0] not in known else a for a in argv]


