"""The built-in offline suite `mcl-suite`: 8 tasks of different domains and answer formats.

`SUITE` is the registry, in the suite's training order; each task lives in its own module here.
`build_suite` writes every task as a TRACE-format directory (train/eval/test.json + task.json) plus a
`suite.json` manifest, byte-identically for a seed and sizes on one Python version (the code and
docqa tasks read this interpreter's standard library). `ensure_suite` builds the default copy in
mcl's cache on first use.
"""

from __future__ import annotations

import json
import platform
import random
from dataclasses import asdict, replace
from pathlib import Path

from mcl.data.suite import arith, code, docqa, fomc, meeting, simplify, stance, topic
from mcl.data.suite.common import Sizes, SuiteTask
from mcl.data.task import SPEC_FILE, SPLITS, TaskSpec
from mcl.errors import MclError
from mcl.io import atomic_path, cache_root, sha256_file

SUITE_NAME = "mcl-suite"
SUITE_VERSION = 3
MANIFEST = "suite.json"
SUITE: dict[str, SuiteTask] = {
    t.spec.name: t for t in [stance.TASK, fomc.TASK, meeting.TASK, code.TASK, docqa.TASK, arith.TASK, topic.TASK, simplify.TASK]
}


def default_suite_dir(seed: int = 0, sizes: Sizes = Sizes()) -> Path:
    """Where the suite for `seed` and `sizes` lives in mcl's cache."""
    suffix = "" if sizes == Sizes() else f"-{sizes.train}-{sizes.eval}-{sizes.test}"
    return cache_root() / "data" / f"{SUITE_NAME}-v{SUITE_VERSION}-{seed}{suffix}"


def _dump(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _write_task(task: SuiteTask, out: Path, seed: int, sizes: Sizes) -> None:
    from mcl.eval.metrics import chance_level, get_metric  # leaf module: metric functions only

    splits = task.make(random.Random(f"{SUITE_NAME}:{task.spec.name}:{seed}"), sizes)
    metric = get_metric(task.spec.metric)
    chance = chance_level(metric, [e.answer for e in splits["train"]], [e.answer for e in splits["test"]], seed)
    spec: TaskSpec = replace(task.spec, chance=round(chance, 4))
    out.mkdir(parents=True)
    (out / SPEC_FILE).write_text(_dump(spec.to_json()), encoding="utf-8")
    for split in SPLITS:
        rows = [{"prompt": e.prompt, "answer": e.answer} for e in splits[split]]
        (out / f"{split}.json").write_text(_dump(rows), encoding="utf-8")


def build_suite(out: str | Path | None = None, seed: int = 0, sizes: Sizes = Sizes()) -> Path:
    """Write every suite task as a TRACE-format dir under `out` (default: the cache), atomically."""
    out = Path(out) if out is not None else default_suite_dir(seed, sizes)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise MclError(f"{out} exists and is not an mcl suite dir; choose another --out")
    if min(sizes.train, sizes.eval, sizes.test) < 1:
        raise MclError(f"split sizes must be positive, got {asdict(sizes)}")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, task in SUITE.items():
            _write_task(task, tmp / name, seed, sizes)
        manifest = {
            "name": SUITE_NAME,
            "version": SUITE_VERSION,
            "seed": seed,
            "sizes": asdict(sizes),
            "python": platform.python_version(),
            "tasks": list(SUITE),
            "sha256": {f"{n}/{f}": sha256_file(tmp / n / f) for n in SUITE for f in [SPEC_FILE] + [f"{s}.json" for s in SPLITS]},
        }
        (tmp / MANIFEST).write_text(_dump(manifest), encoding="utf-8")
    return out


def ensure_suite(seed: int = 0, sizes: Sizes = Sizes()) -> Path:
    """The cached suite dir for `seed` and `sizes`, built on first use."""
    out = default_suite_dir(seed, sizes)
    if not (out / MANIFEST).is_file():
        build_suite(out, seed, sizes)
    return out
