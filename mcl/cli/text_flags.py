"""The text-format flags shared by `mcl eval` and the sweep commands (`--separator`, `--chat-template`, `--bos`).

Unset flags fall back to the format the checkpoints' mcl.json record (runs trained with a non-default
`text` config write it there), else the default ids join (docs/design.md §3).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from mcl.errors import MclError


def add_text_arguments(p: argparse.ArgumentParser) -> None:
    """Register --separator, --chat-template and --bos."""
    g = p.add_argument_group("text format (how prompt and answer become tokens; default: the checkpoints' or ids join)")
    g.add_argument("--separator", metavar="SEP",
                   help="join prompt + SEP + answer as text and mask the prompt by character offsets (e.g. ' ')")
    g.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                   help="render prompt/answer as user/assistant turns with the tokenizer's chat template "
                        "(--no-chat-template: never)")
    g.add_argument("--bos", choices=["auto", "always", "never"],
                   help="leading bos token (auto: unless it is a chat role marker, as SmolLM2's)")


def text_of(args: argparse.Namespace, metas: Sequence[dict[str, Any]] = ()):
    """The TextFormat the flags ask for, else the one the checkpoints' mcl.json agree on, else the default."""
    from mcl.data import text_format

    flags = {k: getattr(args, k) for k in ("separator", "chat_template", "bos") if getattr(args, k, None) is not None}
    recorded = {repr(m.get("text")) for m in metas}
    if len(recorded) > 1 and not flags:
        raise MclError(f"the checkpoints were trained with different text formats {sorted(recorded)}: pass the "
                       "format with --separator/--chat-template/--bos")
    base = next((m["text"] for m in metas if m.get("text")), None) if not flags else None
    return text_format({**(base or {}), **flags})
