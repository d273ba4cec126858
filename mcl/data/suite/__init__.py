"""The built-in offline suite `mcl-suite`: 8 tasks of different domains and answer formats.

`SUITE` is the registry, in the suite's training order; each task lives in its own module here.
The default suite (seed 0, 1000/200/200) ships inside the package (`mcl/data/assets/mcl-suite-v3`:
task.json + gzipped splits + the `suite.json` manifest with each file's sha256), built once on
Python 3.11, so every machine and Python version trains on the same bytes; `shipped_suite_dir`
checks those hashes once per process. `build_suite` is the recipe: it writes every task as a
TRACE-format directory plus a manifest, byte-identically for a seed and sizes on one Python version
(the code and docqa tasks read this interpreter's standard library); `compare_with_shipped` says
whether a build equals the shipped copy. `ensure_suite` gives the shipped copy for the default seed
and sizes and builds any other in mcl's cache on first use.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import random
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

from mcl.data.suite import arith, code, docqa, fomc, meeting, simplify, stance, topic
from mcl.data.suite.common import Sizes, SuiteTask
from mcl.data.task import SPEC_FILE, SPLITS, TaskSpec, read_bytes
from mcl.errors import MclError
from mcl.io import atomic_path, cache_root, sha256_file

SUITE_NAME = "mcl-suite"
SUITE_VERSION = 3
MANIFEST = "suite.json"
SUITE: dict[str, SuiteTask] = {
    t.spec.name: t for t in [stance.TASK, fomc.TASK, meeting.TASK, code.TASK, docqa.TASK, arith.TASK, topic.TASK, simplify.TASK]
}
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / f"{SUITE_NAME}-v{SUITE_VERSION}"


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
    if out.is_dir() and (foreign := _not_built_here(out)):
        raise MclError(f"{out} holds {foreign}; a rebuild replaces the whole dir, so nothing was changed: move "
                       "that out of it or choose another --out")
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


def _manifest(suite_dir: Path) -> dict:
    return json.loads((suite_dir / MANIFEST).read_text(encoding="utf-8"))


def _not_built_here(suite_dir: Path) -> str | None:
    """The first thing in an earlier build's dir that the build did not write, or that changed since (described),
    by its manifest: the manifest, the task dirs and their files with their sha256; None when all is the build's."""
    try:
        manifest = _manifest(suite_dir)
        digests = dict(manifest["sha256"])
        listed = {MANIFEST, *manifest["tasks"], *digests}
    except (OSError, ValueError, KeyError, TypeError):
        return f"a {MANIFEST} that is not an mcl suite manifest"
    for p in sorted(suite_dir.rglob("*")):
        rel = p.relative_to(suite_dir).as_posix()
        if rel not in listed or p.is_symlink():
            return f"{rel}, which mcl data build did not write (not in its {MANIFEST})"
        if rel in digests and (not p.is_file() or sha256_file(p) != digests[rel]):
            return f"{rel}, changed since mcl data build wrote it"
    return None


def _stored(suite_dir: Path, rel: str) -> Path:
    """The file holding manifest entry `rel` (`topic/train.json`): itself, or its gzipped copy."""
    f = suite_dir / rel
    return f if f.is_file() else f.with_name(f.name + ".gz")


def verify_suite(suite_dir: Path) -> dict:
    """The suite's manifest, after checking every file's sha256 (of its uncompressed bytes) against it."""
    if not (suite_dir / MANIFEST).is_file():
        raise MclError(f"{suite_dir}: no {MANIFEST}; not an mcl suite dir")
    manifest = _manifest(suite_dir)
    for rel, digest in manifest["sha256"].items():
        f = _stored(suite_dir, rel)
        if not f.is_file():
            raise MclError(f"{suite_dir}: {rel} is missing; reinstall mcl (or rebuild: mcl data build)")
        if hashlib.sha256(read_bytes(f)).hexdigest() != digest:
            raise MclError(f"{f}: content differs from {MANIFEST} (sha256); reinstall mcl (or rebuild: mcl data build)")
    return manifest


@lru_cache(maxsize=1)
def shipped_suite_dir() -> Path:
    """The suite shipped in the package (seed 0, default sizes), its hashes checked once per process."""
    verify_suite(SHIPPED_DIR)
    return SHIPPED_DIR


def pack_suite(src: str | Path, dest: str | Path) -> Path:
    """Copy a built suite as the package ships it: manifest and task.json as they are, splits gzipped."""
    src, dest = Path(src), Path(dest)
    manifest = verify_suite(src)
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / MANIFEST).write_bytes((src / MANIFEST).read_bytes())
        for rel in manifest["sha256"]:
            (tmp / rel).parent.mkdir(exist_ok=True)
            data = (src / rel).read_bytes()
            if rel.endswith(SPEC_FILE):
                (tmp / rel).write_bytes(data)
            else:
                (tmp / f"{rel}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    verify_suite(dest)
    return dest


def compare_with_shipped(suite_dir: str | Path) -> list[str]:
    """Files of a built suite whose content differs from the shipped copy ([] = byte-identical)."""
    built, shipped = _manifest(Path(suite_dir))["sha256"], _manifest(SHIPPED_DIR)["sha256"]
    return sorted(rel for rel in {**built, **shipped} if built.get(rel) != shipped.get(rel))


def is_shipped(seed: int, sizes: Sizes) -> bool:
    """Whether the package ships the suite for this seed and these sizes."""
    m = _manifest(SHIPPED_DIR)
    return seed == m["seed"] and asdict(sizes) == m["sizes"]


def ensure_suite(seed: int = 0, sizes: Sizes = Sizes()) -> Path:
    """The suite dir for `seed` and `sizes`: the shipped copy for the defaults, else built in the cache on first use."""
    if is_shipped(seed, sizes):
        return shipped_suite_dir()
    out = default_suite_dir(seed, sizes)
    if not (out / MANIFEST).is_file():
        build_suite(out, seed, sizes)
    return out
