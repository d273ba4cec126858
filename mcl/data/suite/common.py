"""What every suite task shares: its definition (`SuiteTask`), split sizes and split drawing helpers.

A suite task is a spec plus a generator `make(rng, sizes) -> {"train": [...], "eval": [...],
"test": [...]}` that must be a pure function of the seeded `random.Random` it is given, so the
suite builds byte-identically from a seed. Splits never share a prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from mcl.data.task import SPLITS, Example, TaskSpec
from mcl.errors import MclError

Splits = dict[str, list[Example]]


@dataclass(frozen=True)
class Sizes:
    """Examples per split."""

    train: int = 1000
    eval: int = 200
    test: int = 200

    def of(self, split: str) -> int:
        """The size of one split by name."""
        return getattr(self, split)


@dataclass(frozen=True)
class SuiteTask:
    """A built-in task: its spec (metric, labels, ...) and a seeded generator of its splits."""

    spec: TaskSpec
    make: Callable[[random.Random, Sizes], Splits]


def draw_unique(name: str, sizes: Sizes, make_one: Callable[[int], Example], max_tries: int = 50) -> Splits:
    """Call `make_one(i)` for i = 0, 1, ... until every split is full of distinct prompts (test first)."""
    total = sizes.test + sizes.eval + sizes.train
    seen: set[str] = set()
    drawn: list[Example] = []
    for i in range(max_tries * max(total, 1)):
        if len(drawn) == total:
            break
        ex = make_one(i)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            drawn.append(ex)
    if len(drawn) < total:
        raise MclError(f"task {name}: only {len(drawn)} distinct examples for {total} requested; ask for fewer")
    return fill_splits(drawn, sizes)


def fill_splits(examples: list[Example], sizes: Sizes) -> Splits:
    """Cut an ordered list into test, eval and train (in that order) of the requested sizes."""
    out, start = {}, 0
    for split in ("test", "eval", "train"):
        out[split] = examples[start : start + sizes.of(split)]
        start += sizes.of(split)
    return {s: out[s] for s in SPLITS}


def split_groups(name: str, groups: list[list[Example]], sizes: Sizes, rng: random.Random) -> Splits:
    """Assign whole groups (files, sources) to test, eval, then train, and sample each split's size."""
    pools: dict[str, list[Example]] = {s: [] for s in SPLITS}
    order = ["test", "eval", "train"]
    k = 0
    for group in groups:
        while k < 2 and len(pools[order[k]]) >= sizes.of(order[k]):
            k += 1
        pools[order[k]].extend(group)
    out = {}
    for split in SPLITS:
        if len(pools[split]) < sizes.of(split):
            raise MclError(f"task {name}: only {len(pools[split])} {split} examples available; ask for fewer")
        out[split] = rng.sample(pools[split], sizes.of(split))
    return out


def interleave(by_label: dict[str, list[Example]]) -> list[Example]:
    """Round-robin over labels (sorted), so any prefix is label-balanced."""
    lists = [by_label[k] for k in sorted(by_label)]
    out = []
    for i in range(max(map(len, lists))):
        out.extend(lst[i] for lst in lists if i < len(lst))
    return out
