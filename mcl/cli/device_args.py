"""`--device` and `--dtype`, shared by every command that loads a model (one `add_device_args` call each).

Nothing heavy is imported at parse time; `model_kwargs(args)` resolves the flags when the command runs
(so `--device cuda` without a GPU is a one-line error, exit 2) into keyword arguments of `load_base`.
"""

from __future__ import annotations

import argparse
from typing import Any

DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def add_device_args(p: argparse.ArgumentParser, dtype_default: str | None = "fp32") -> None:
    """Add `--device` (default: cuda when available, else cpu) and `--dtype fp32|bf16|fp16` to a parser."""
    p.add_argument("--device", metavar="DEV", help="cpu | cuda | cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default=dtype_default,
                   help=f"precision of the base model's weights (default {dtype_default or 'from the config'}); "
                        "losses are accumulated in fp32")


def resolve_device(name: str | None) -> str:
    """The device a `--device` value names ('cuda' without a GPU: one-line error)."""
    from mcl.models.device import resolve_device as resolve

    return str(resolve(name))


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`load_base` keyword arguments (device, dtype) from parsed `--device` / `--dtype`.

    Under a launcher with several processes, a plain `cuda` is this process's GPU (`cuda:LOCAL_RANK`).
    """
    from mcl.analysis.distributed import rank_device

    return {"device": resolve_device(rank_device(args.device or resolve_device(None))), "dtype": args.dtype or "fp32"}
