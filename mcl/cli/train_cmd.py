"""`mcl train [CONFIG.yaml] [key=value ...] [--resume] [--quiet] [--dry-run] [--help-config]`: run or resume a
continual-learning run.

Overrides (`key=value`, `--key=value`, `--key value` or `--set key=value`) may stand anywhere after `train`.
With no config file, a small default runs: the tiny model on three suite tasks for a few steps each.
`--dry-run` prints what a run would be (config, run dir, global batch, memory) and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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
    if args.dry_run:
        _dry_run(cfg, run_dir)
        return 0
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


def _memory_line(cfg) -> str:
    """The per-GPU memory estimate of one training step (mcl.train.memory), read from the model's config.json only."""
    from transformers import AutoConfig

    from mcl.models import NAMED_MODELS, model_dir
    from mcl.models.tiny import ASSET_DIR
    from mcl.train.memory import Shape, estimate

    where = model_dir(cfg.model) if cfg.model in NAMED_MODELS else cfg.model
    if cfg.model == "tiny" and not (Path(where) / "config.json").is_file():
        where = ASSET_DIR  # the shipped tiny model, not yet copied into the cache
    try:
        shape = Shape.from_config(AutoConfig.from_pretrained(str(where)))
    except (OSError, ValueError, TypeError):
        return f"memory estimate: unavailable (no config.json for {cfg.model} yet; `mcl models prepare` builds a named one)"
    e = estimate(shape, cfg.lora, cfg.method, cfg.train.batch_size, cfg.train.max_len, cfg.model_dtype,
                 cfg.train.gradient_checkpointing)
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in e.to_dict().items() if k != "total")
    return f"memory estimate per GPU: {e.total:.3f} GiB ({parts})"


def _dry_run(cfg, run_dir) -> None:
    """Print the resolved config, run dir, global batch and memory estimate; write nothing."""
    import yaml

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    state = "resumes what is there" if (run_dir / "state").exists() else "done: it would only report" \
        if (run_dir / "metrics" / "summary.json").exists() else "new"
    print(f"run dir: {run_dir} ({state})")
    print(f"global batch: {cfg.train.batch_size * cfg.train.grad_accum * processes} examples per optimizer step "
          f"(batch_size {cfg.train.batch_size} x grad_accum {cfg.train.grad_accum} x {processes} process(es))")
    print(_memory_line(cfg))
    print("dry run: nothing written")


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
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, run dir, global batch and memory estimate; write nothing")
    p.add_argument("--help-config", action=HelpConfig, help="list every config key (type, default, meaning) and exit")
    add_device_args(p, dtype_default=None)
    p.set_defaults(func=_train)


class HelpConfig(argparse.Action):
    """`--help-config`: print the config reference (docs/config.md's keys) and exit."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from mcl.train.config_doc import plain_reference

        print(plain_reference(), end="")
        parser.exit()


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl train`."""
    p = sub.add_parser("train", help="run (or resume) a continual-learning run from a YAML config",
                       usage="mcl train [-h] [--help-config] [CONFIG.yaml] [KEY=VALUE ...] [--resume] [--quiet] "
                             "[--dry-run] [--device D] [--dtype T]",
                       description="Overrides: key=value, --key=value, --key value or --set key=value with dotted "
                                   "keys, in any order, e.g. train.lr=5e-4 method=er; Hugging Face names "
                                   "(learning_rate, lora_alpha, ...) work too. Every key: --help-config or "
                                   "docs/config.md.")
    add_arguments(p)


def normalize_argv(argv: list[str]) -> list[str]:
    """After `train`, turn every override (`key=value`, `--key=value`, `--key value`) into `--set key=value`."""
    if not argv or argv[0] != "train":
        return argv
    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe)
    known = set(probe._option_string_actions) | {"-h", "--help"}
    out, rest = [argv[0]], list(argv[1:])
    while rest:
        a = rest.pop(0)
        if a.startswith("--") and "=" in a and a.split("=")[0] not in known:
            out += ["--set", a[2:]]
        elif a.startswith("--") and a not in known and rest and not rest[0].startswith("--"):
            out += ["--set", f"{a[2:]}={rest.pop(0)}"]
        elif out[-1] != "--set" and not a.startswith("-") and "=" in a and not a.endswith((".yaml", ".yml")):
            out += ["--set", a]
        else:
            out.append(a)
    return out
