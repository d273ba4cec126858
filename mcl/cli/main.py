"""`mcl` entry point: each module named in SUBCOMMANDS adds its own sub-parser via `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Callable

from mcl.errors import MclError
from mcl.lock import release_held

SUBCOMMANDS = ["models", "adapters", "data", "eval", "barrier", "curve", "plane", "barrier_matrix", "train", "report", "list"]


def expected_failure(e: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input, OS or decoding error), else None (a bug)."""
    import json

    import yaml

    if isinstance(e, MclError):
        return str(e)
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or type(e).__name__}{where}" if e.strerror else f"{type(e).__name__}: {e}"
    if isinstance(e, UnicodeDecodeError):
        return f"cannot decode input as {e.encoding} (byte {e.start}): expected UTF-8 text"
    if type(e).__name__ == "SafetensorError":
        return f"corrupt safetensors file: {str(e).splitlines()[0] if str(e) else e!r}"
    if isinstance(e, (json.JSONDecodeError, yaml.YAMLError)):
        return f"malformed {'JSON' if isinstance(e, json.JSONDecodeError) else 'YAML'}: {str(e).splitlines()[0]}"
    return None


def quiet_hf_progress() -> None:
    """Keep stderr to mcl's own progress and one-line errors, without importing transformers to say so."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub and transformers at import
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_cli(build: Callable[[], argparse.ArgumentParser], argv: list[str] | None = None) -> int:
    """Parse argv with the parser from `build` and run `args.func`; expected failures → one line, exit 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build().parse_args(argv)
    quiet_hf_progress()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # peft vs transformers 5
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001  (anything not an expected failure is re-raised: a bug keeps its traceback)
        message = expected_failure(e)
        if message is None:
            raise
        print(f"{build().prog}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{build().prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        release_held()  # the --out locks a command took


def build_parser() -> argparse.ArgumentParser:
    """The `mcl` parser with every registered subcommand."""
    from mcl import __version__

    parser = argparse.ArgumentParser(prog="mcl", description="Mode connectivity and continual LoRA training.")
    parser.add_argument("--version", action="version", version=f"mcl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"mcl.cli.{name}_cmd")
        except ModuleNotFoundError as e:
            if e.name == f"mcl.cli.{name}_cmd":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script `mcl`."""
    from mcl.cli.train_cmd import normalize_argv

    return run_cli(build_parser, normalize_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
