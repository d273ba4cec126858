"""The top-level Python API, five lines from a checkpoint to a number: `mcl.train(...)`, `mcl.barrier(a, b, ...)`,
`mcl.plane(a, b, c, ...)`. Each means what the CLI command of the same name means (a YAML config and its
overrides; adapters supplying their base model and recorded tasks) and prints no library warnings.

    import mcl
    run = mcl.train("configs/tiny-suite-seq.yaml", "train.steps_per_task=20")
    a, b, c = sorted((run / "tasks").iterdir())[:3]
    print(mcl.barrier(a, b, tasks=["stance"])["stance"]["barrier"]["loss"])
    mcl.plane(a, b, c, png="plane.png")
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextmanager
def _quiet() -> Iterator[None]:
    """Offline by default, and without the peft-vs-transformers deprecation noise the CLI also hides."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


def train(config: str | os.PathLike | None = None, *overrides: str, progress: bool = True, **keys: Any) -> Path:
    """Run (or resume) a continual-learning run: a YAML config, `key=value` overrides and keyword keys; its run dir."""
    from mcl.train.config import load_config
    from mcl.train.loop import train as run_training

    with _quiet():
        return run_training(load_config(config, list(overrides), **keys), progress_bar=progress)


def _setting(nodes: Sequence[Any], tasks: Sequence[str] | None, model: str | None, split: str, limit: int | None,
             metric: bool):
    """(adapter states, base model, task evaluators) as the sweep commands resolve them (max_len included)."""
    from mcl.adapters import read_adapter
    from mcl.analysis import evaluators
    from mcl.cli.barrier_cmd import apply_base_override, base_of, tasks_of
    from mcl.cli.max_len import model_context, task_max_lens
    from mcl.data import text_format
    from mcl.data.load import load_tasks
    from mcl.models import load_base
    from mcl.train.records import recorded_max_len

    states = [n if hasattr(n, "tensors") else read_adapter(n) for n in nodes]
    apply_base_override(states, model)
    base, tokenizer = load_base(base_of(states, model))
    text = text_format(next((s.meta["text"] for s in states if s.meta.get("text")), None))
    loaded = load_tasks(tasks_of(states, tasks), loss_only=not metric)
    max_lens = task_max_lens(None, [recorded_max_len(s.path, s.meta) for s in states], loaded, tokenizer, split, limit,
                             text, metric, model_context(base))
    return states, base, evaluators(tokenizer, loaded, split, max_len=max_lens, limit=limit, text=text)


def barrier(a: Any, b: Any, tasks: Sequence[str] | None = None, model: str | None = None, space: str = "factors",
            points: int | str = 11, metric: bool = False, split: str = "eval", limit: int | None = None,
            progress: bool = False) -> dict[str, dict[str, Any]]:
    """Barriers on the straight path a → b (adapter dirs or states): per task its t, loss, metric and barriers."""
    from mcl.adapters import check_compatible
    from mcl.analysis import path_barriers, sweep
    from mcl.paths import Linear

    with _quiet():
        (sa, sb), base, evaluators = _setting([a, b], tasks, model, split, limit, metric)
        check_compatible(sa, sb, space)
        return path_barriers(sweep(Linear(sa, sb, space=space), base, evaluators, points, metric, progress=progress))


def plane(a: Any, b: Any, c: Any, tasks: Sequence[str] | None = None, model: str | None = None, grid: int = 11,
          space: str = "factors", metric: bool = False, split: str = "eval", limit: int | None = None,
          png: str | os.PathLike | None = None, html: str | os.PathLike | None = None, progress: bool = False):
    """Loss (and metric) over the plane through three adapters; a `Plane`, drawn to `png`/`html` when given."""
    from mcl.adapters import check_compatible
    from mcl.analysis import plane as scan

    with _quiet():
        (sa, sb, sc), base, evaluators = _setting([a, b, c], tasks, model, split, limit, metric)
        check_compatible(sa, sb, space)
        check_compatible(sa, sc, space)
        result = scan(sa, sb, sc, base, evaluators, grid=grid, space=space, metric=metric, progress=progress)
        if png or html:
            from mcl.analysis.plots import plot_plane

            plot_plane(result, png=png, html=html)
        return result
