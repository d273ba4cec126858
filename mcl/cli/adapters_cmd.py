"""`mcl adapters info DIR` and `mcl adapters check A B [--space S]`: read configs and safetensors headers only (no
torch), so both answer at once."""

from __future__ import annotations

import argparse
import json

from mcl.cli.common import choice_argument


def _info(args: argparse.Namespace) -> int:
    from mcl.adapters.io import read_adapter_header, scaling

    st = read_adapter_header(args.adapter)
    modules = sorted({k.split(".lora_")[0] for k in st.tensors})
    n = sum(t.numel() for t in st.tensors.values())
    print(json.dumps({
        "path": st.path, "base_model": st.base_model, "r": st.config.get("r"), "lora_alpha": st.config.get("lora_alpha"),
        "scaling": scaling(st.config), "use_rslora": st.config.get("use_rslora", False),
        "use_dora": st.config.get("use_dora", False), "target_modules": st.config.get("target_modules"),
        "modules": len(modules), "params": n, "mcl": st.meta or None,
    }, indent=2, default=str))
    return 0


def _check(args: argparse.Namespace) -> int:
    from mcl.adapters.compat import check_compatible
    from mcl.adapters.io import read_adapter_header

    a, b = read_adapter_header(args.a), read_adapter_header(args.b)
    check_compatible(a, b, args.space)
    print(f"compatible in {args.space} space: {args.a} {args.b}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl adapters ...`."""
    p = sub.add_parser("adapters", help="inspect and compare PEFT LoRA adapter dirs")
    asub = p.add_subparsers(dest="adapters_command", required=True)
    info = asub.add_parser("info", help="config, size and mcl sidecar of an adapter dir")
    info.add_argument("adapter", metavar="DIR", help="PEFT adapter dir")
    info.set_defaults(func=_info)
    chk = asub.add_parser("check", help="are two adapters compatible for interpolation?")
    chk.add_argument("a", metavar="CKPT_A", help="first adapter (PEFT dir)")
    chk.add_argument("b", metavar="CKPT_B", help="second adapter (PEFT dir)")
    choice_argument(chk, "--space", "spaces", "interpolation space to check for", default="factors")
    chk.set_defaults(func=_check)
