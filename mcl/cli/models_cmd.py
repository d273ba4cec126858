"""`mcl models prepare NAME [--retrain]` and `mcl models info NAME_OR_DIR`."""

from __future__ import annotations

import argparse
import json
import math

from mcl.errors import MclError


def _prepare(args: argparse.Namespace) -> int:
    from mcl import models

    if args.name not in models.NAMED_MODELS:
        raise MclError(f"unknown model name {args.name!r}; named models: {', '.join(models.NAMED_MODELS)}")
    if args.retrain:
        if args.name != "tiny":
            raise MclError("--retrain applies to the tiny model only")
        from mcl.models.tiny import retrain

        info = retrain()
        print(f"pretrained tiny: held-out loss {info['heldout_loss']:.3f} (uniform {info['uniform_loss']:.3f})")
    out = models.prepare(args.name, force=args.force or args.retrain)
    print(out)
    return 0


def _info(args: argparse.Namespace) -> int:
    from mcl.models import load_base

    model, tok = load_base(args.model)
    n = sum(p.numel() for p in model.parameters())
    info = {"model": args.model, "params": n, "vocab": len(tok), "bos": tok.bos_token, "eos": tok.eos_token,
            "pad": tok.pad_token, "uniform_loss": round(math.log(len(tok)), 4)}
    if args.heldout:
        from mcl.models.tiny import heldout_loss, heldout_stream

        info["heldout_loss"] = round(heldout_loss(model, heldout_stream(tok), 256), 4)
    print(json.dumps(info, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl models ...`."""
    p = sub.add_parser("models", help="prepare and inspect base models")
    msub = p.add_subparsers(dest="models_command", required=True)
    prep = msub.add_parser("prepare", help="build a named model's HF checkpoint in the cache (tiny, smollm2)")
    prep.add_argument("name", help="a named model, e.g. tiny or smollm2 (`mcl list` shows them all)")
    prep.add_argument("--retrain", action="store_true", help="tiny only: re-pretrain from scratch (~50 min on 2 cores)")
    prep.add_argument("--force", action="store_true", help="rebuild the cached dir")
    prep.set_defaults(func=_prepare)
    info = msub.add_parser("info", help="parameters, tokenizer, and optionally held-out stdlib loss")
    info.add_argument("model", help="named model (tiny, smollm2), HF dir or hub id")
    info.add_argument("--heldout", action="store_true", help="loss on the held-out Python stdlib split")
    info.set_defaults(func=_info)
