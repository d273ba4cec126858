"""`mcl list`: every registered model, task, space, path, barrier metric, analysis option, task metric and CL method.

What it prints, and the registry names that `--help` texts list, come from `registry_index.json`, generated
from the registries themselves (`python -m mcl.cli.list_cmd` rewrites it; a test keeps it current), so
neither needs torch: both start in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

INDEX_FILE = Path(__file__).with_name("registry_index.json")


def _rows() -> dict[str, list[tuple[str, str]]]:
    from mcl.analysis.barriers import BARRIER_METRICS
    from mcl.data import SUITE
    from mcl.eval.metrics import METRICS
    from mcl.models import NAMED_MODELS
    from mcl.paths import ALIGNERS, PATHS, SPACES
    from mcl.train.methods import METHODS

    def doc(obj) -> str:
        return ((obj.__doc__ or "").strip().splitlines() or [""])[0]

    return {
        "models": [(m.name, m.description) for m in NAMED_MODELS.values()],
        "tasks (mcl-suite)": [(name, f"{t.spec.metric}: {t.spec.description}") for name, t in SUITE.items()],
        "interpolation spaces": [(n, doc(c)) for n, c in SPACES.items()],
        "paths": [(n, f"{doc(c)} [{c.reference}]") for n, c in PATHS.items()],
        "gauge alignments (--align)": [(n, a.description) for n, a in ALIGNERS.items()],
        "barrier metrics": [(n, m.description) for n, m in BARRIER_METRICS.items()],
        "barrier analysis": [
            ("--points auto", "adaptive search: coarse grid, then bounded Brent search at each task's peak above "
                              "the chord (mcl.analysis.adaptive_sweep)"),
            ("--ci LEVEL", "bootstrap intervals over eval examples (and runs) for every loss barrier and point "
                           "(mcl.analysis.bootstrap_barriers)"),
            ("--attribute BY", "the barrier with one group (layers | modules) moving at a time, the rest held "
                               "(mcl.analysis.attribution.attribute)"),
        ],
        "task metrics": [(n, m.description) for n, m in METRICS.items()],
        "continual-learning methods": [(n, f"{c.title} [{c.reference}]" + ("" if c.produces_lora else
                                                                           " (prompts, no LoRA checkpoints: "
                                                                           "not for the path analysis)"))
                                       for n, c in METHODS.items()],
    }


def build_index() -> dict:
    """The index from the live registries: `mcl list`'s sections and every registry's names (imports them all)."""
    from mcl.cli.common import REGISTRIES

    names = {kind: list(getattr(importlib.import_module(module), attr)) for kind, (module, attr) in REGISTRIES.items()}
    return {"sections": {k: [list(r) for r in rows] for k, rows in _rows().items()}, "names": names}


def read_index() -> dict:
    """The shipped registry index (registry_index.json)."""
    return json.loads(INDEX_FILE.read_text(encoding="utf-8"))


def _list(args: argparse.Namespace) -> int:
    for section, rows in read_index()["sections"].items():
        print(f"{section}:")
        for name, text in rows:
            print(f"  {name:16s} {text}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl list`."""
    p = sub.add_parser("list", help="list models, tasks, spaces, paths, metrics and methods")
    p.set_defaults(func=_list)


if __name__ == "__main__":
    INDEX_FILE.write_text(json.dumps(build_index(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {INDEX_FILE}")
