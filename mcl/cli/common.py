"""The shared vocabulary of mcl's commands: one flag name, one default and one help text per concept.

Every command that loads a base model takes `--model` (alias `--base`), every command that evaluates
takes `--tasks` (alias `--data`), `--metric/--no-metric`, `--split`, `--limit`, `--batch-size`,
`--max-len`, `--threads` and `--quiet` from here, with the defaults below. Choices that come from a
registry (spaces, paths, methods, metrics) are listed in the help from the registry index
(`mcl/cli/registry_index.json`, generated from the registries), so neither building a parser nor
printing help imports torch; the registry itself checks the value when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Iterator

DEFAULT_POINTS = 11  # t values 0, 0.1, ..., 1: the midpoint is always on the grid
DEFAULT_BATCH_SIZE = 32

REGISTRIES = {  # kind -> (module, registry attribute)
    "spaces": ("mcl.paths.spaces", "SPACES"),
    "paths": ("mcl.paths.curves", "PATHS"),
    "methods": ("mcl.train.methods", "METHODS"),
    "task metrics": ("mcl.eval.metrics", "METRICS"),
    "barrier metrics": ("mcl.analysis.barriers", "BARRIER_METRICS"),
}


class RegistryNames:
    """The names in one of mcl's registries, read from the registry index on first use; `str()` lists them."""

    def __init__(self, kind: str, only: tuple[str, ...] = ()) -> None:
        self.kind, self.only, self._names = kind, only, None

    def names(self) -> list[str]:
        """Registered names (restricted to `only` when given, in registry order)."""
        if self._names is None:
            from mcl.cli.list_cmd import read_index

            self._names = [n for n in read_index()["names"][self.kind] if not self.only or n in self.only]
        return self._names

    def __str__(self) -> str:
        return ", ".join(self.names())


def choice_argument(p: argparse.ArgumentParser, flag: str, kind: str, help: str, default: str | None = None,
                    default_text: str | None = None, only: tuple[str, ...] = ()) -> None:
    """A flag whose value is a registered name; its help lists the names (read only when help is shown).

    The value is checked by the registry itself when the command runs, so a wrong name is the
    registry's one-line error ("unknown path 'spline'; known: ...").
    """
    said = default_text or default
    action = p.add_argument(flag, default=default, metavar=kind.split()[-1].rstrip("s").upper(),
                            help=f"{help}: one of %(names)s" + (f" (default {said})" if said else ""))
    action.names = RegistryNames(kind, only)


def add_model_argument(p: argparse.ArgumentParser, required: bool = False,
                       help: str = "base model: a named model (tiny, smollm2), an HF dir or hub id; "
                                   "default: the base model the adapters name") -> None:
    """`--model` (alias `--base`): the base model."""
    p.add_argument("--model", "--base", dest="model", metavar="MODEL", required=required, help=help)


def add_tasks_argument(p: argparse.ArgumentParser, default: list[str] | None = None,
                       help: str = "built-in task names, `mcl-suite` or task dirs; "
                                   "default: the tasks named in the checkpoints' mcl.json") -> None:
    """`--tasks` (alias `--data`): the tasks to evaluate or train on."""
    p.add_argument("--tasks", "--data", dest="tasks", nargs="+", metavar="TASK", default=default, help=help)


def add_metric_argument(p: argparse.ArgumentParser, default: bool) -> None:
    """`--metric/--no-metric` (aliases `--generate/--no-generate`): score the task metric on greedy generations."""
    p.add_argument("--metric", "--generate", dest="metric", action=argparse.BooleanOptionalAction, default=default,
                   help="score the task metric on greedy generations besides the answer loss "
                        f"(default {'on' if default else 'off: it generates at every point'})")


def add_eval_arguments(p: argparse.ArgumentParser, splits: tuple[str, ...] = ("eval", "test"),
                       metric: bool = False) -> None:
    """Evaluation settings of every command that scores a model: split, metric, limit, batch, length, threads."""
    p.add_argument("--split", default="eval", choices=splits, help="split to evaluate: %(choices)s (default eval)")
    add_metric_argument(p, metric)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N examples of each task")
    add_batch_arguments(p)
    add_threads_argument(p)


def add_batch_arguments(p: argparse.ArgumentParser, batch_size: int = DEFAULT_BATCH_SIZE,
                        batch_help: str = "examples per batch") -> None:
    """`--batch-size` and `--max-len`."""
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="N", help=f"{batch_help} (default {batch_size})")
    p.add_argument("--max-len", type=int, metavar="N",
                   help="max tokens per example, prompts cut on the left (default: the max_len the checkpoints were "
                        "trained with, else the longest example, or prompt + max_new_tokens when generating; "
                        "any cut is reported with its count)")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """`--threads`: torch CPU threads."""
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")


def add_points_argument(p: argparse.ArgumentParser, help: str = "t values from 0 to 1") -> None:
    """`--points`: how many t values a path is evaluated at."""
    p.add_argument("--points", type=int, default=DEFAULT_POINTS, metavar="N", help=f"{help} (default {DEFAULT_POINTS})")


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    """`--quiet`: no progress bars."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU thread count when `--threads` was given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
