"""Task metrics, a registry by name: each scores one prediction against one reference in [0, 1].

`accuracy` (normalised exact match on the reference's words, so a label answer counts when the
prediction starts with that label word), `exact_numeric` (first number in the prediction equals the
reference number), `rouge_l` (ROUGE-L F1 from `rouge-score`, Unicode word tokens) and
`edit_similarity` (Indel similarity from `rapidfuzz`, as TRACE's Py150 metric). No maintained
offline package computes SARI, so simplification tasks use ROUGE-L. `chance_level` is the score of
answers drawn at random from a pool (the train answers): the floor a task's metric is judged against.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from mcl.errors import MclError

_PUNCT = string.punctuation + "“”‘’"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Metric:
    """A named per-example score in [0, 1]; the task score is its mean over examples."""

    name: str
    description: str
    higher_is_better: bool
    score_one: Callable[[str, str], float]

    def scores(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Per-example scores (for means and bootstrap intervals)."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        return [self.score_one(p, r) for p, r in zip(predictions, references)]

    def __call__(self, predictions: Sequence[str], references: Sequence[str]) -> float:
        """Mean score over examples (0.0 for none)."""
        s = self.scores(predictions, references)
        return sum(s) / len(s) if s else 0.0


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace and strip punctuation from both ends."""
    return " ".join(text.lower().split()).strip(_PUNCT + " ")


def _accuracy(pred: str, ref: str) -> float:
    ref_words = normalize(ref).split()
    pred_words = [w.strip(_PUNCT) for w in normalize(pred).split()]
    return float(pred_words[: len(ref_words)] == [w.strip(_PUNCT) for w in ref_words])


def parse_number(text: str) -> float | None:
    """The first number in `text` (thousands separators ignored), or None."""
    m = _NUMBER.search(text.replace(",", ""))
    return float(m.group()) if m else None


def _exact_numeric(pred: str, ref: str) -> float:
    p, r = parse_number(pred), parse_number(ref)
    return float(p is not None and r is not None and abs(p - r) <= 1e-6 * max(1.0, abs(r)))


class _UnicodeWords:
    """rouge-score tokenizer: lower-cased Unicode word characters (its default drops non-ASCII)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWords())


def _rouge_l(pred: str, ref: str) -> float:
    return _rouge_scorer().score(ref, pred)["rougeL"].fmeasure


def _edit_similarity(pred: str, ref: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(pred.rstrip(), ref.rstrip()) / 100.0


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", "normalised exact match of the reference's words at the start of the prediction", True, _accuracy),
        Metric("exact_numeric", "the first number in the prediction equals the reference number", True, _exact_numeric),
        Metric("rouge_l", "ROUGE-L F1 (rouge-score, Unicode word tokens)", True, _rouge_l),
        Metric("edit_similarity", "Indel edit similarity in [0, 1] (rapidfuzz fuzz.ratio / 100)", True, _edit_similarity),
    ]
}


def get_metric(name: str) -> Metric:
    """The metric registered under `name`; MclError listing the known names otherwise."""
    if name not in METRICS:
        raise MclError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def chance_level(metric: Metric, pool: Sequence[str], references: Sequence[str], seed: int = 0, rounds: int = 4) -> float:
    """Mean score of answers drawn at random from `pool` (e.g. the train answers) against `references`."""
    rng = random.Random(seed)
    return sum(metric([rng.choice(pool) for _ in references], references) for _ in range(rounds)) / rounds
