"""Task metrics, a registry by name: each scores one prediction against one reference in [0, 1].

`accuracy` (normalised exact match on the reference's words, so a label answer counts when the
prediction starts with that label word), `exact_numeric` (first number in the prediction equals the
reference number), `rouge_l` (ROUGE-L F1 from `rouge-score`, Unicode word tokens) and
`edit_similarity` (Indel similarity from `rapidfuzz`) and `sari` (Xu et al. 2016; it also needs the
source text, see `mcl.eval.sari`). TRACE's own scoring (its `metrics.py` and `evaluations/`) is
mirrored by `exact_match` (C-STANCE, FOMC, NumGLUE: the whole answer string), `answer_choice`
(ScienceQA: the letter after "Answer: ") and `py150_similarity` (edit similarity after restoring
Py150's literal placeholders); TRACE scores MeetingBank with ROUGE-L and 20Minuten with SARI. `chance_level`
is the score of answers drawn at random from a pool (the train answers): the floor a task's metric
is judged against.
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
    score_one: Callable[..., float]
    needs_source: bool = False  # score_one(pred, ref, source): the input the answer rewrites (SARI)

    def scores(self, predictions: Sequence[str], references: Sequence[str],
               sources: Sequence[str] | None = None) -> list[float]:
        """Per-example scores (for means and bootstrap intervals); `sources` only for source-based metrics."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        if not self.needs_source:
            return [self.score_one(p, r) for p, r in zip(predictions, references)]
        if sources is None or len(sources) != len(references):
            raise ValueError(f"metric {self.name} needs one source text per reference")
        return [self.score_one(p, r, s) for p, r, s in zip(predictions, references, sources)]

    def __call__(self, predictions: Sequence[str], references: Sequence[str],
                 sources: Sequence[str] | None = None) -> float:
        """Mean score over examples (0.0 for none)."""
        s = self.scores(predictions, references, sources)
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


def _exact_match(pred: str, ref: str) -> float:
    return float(pred.strip() == ref.strip())


_CHOICE = re.compile(r"Answer: (.)")


def _answer_choice(pred: str, ref: str) -> float:
    p, r = _CHOICE.search(pred), _CHOICE.search(ref)
    return float(p is not None and r is not None and p.group(1) == r.group(1))


_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def restore_py150_literals(code: str) -> str:
    """Py150's literal placeholders as TRACE restores them: <NUM_LIT> -> 0, <STR_LIT>/<CHAR_LIT> -> '', <X_LIT:v> -> v."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return _LITERAL.sub(lambda m: m.group(2), code)


def _py150_similarity(pred: str, ref: str) -> float:
    return _edit_similarity(restore_py150_literals(pred), restore_py150_literals(ref))


def _sari(pred: str, ref: str, source: str) -> float:
    from mcl.eval.sari import sari

    return sari(source, pred, [ref])


def _edit_similarity(pred: str, ref: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(pred.rstrip(), ref.rstrip()) / 100.0


def _no_metric(pred: str, ref: str) -> float:
    raise MclError("this task has no metric (a task dir without task.json, read for its loss only): write task.json, "
                   "copy a template (mcl data template) or name the metric as DIR:METRIC")


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", "normalised exact match of the reference's words at the start of the prediction", True, _accuracy),
        Metric("exact_numeric", "the first number in the prediction equals the reference number", True, _exact_numeric),
        Metric("rouge_l", "ROUGE-L F1 (rouge-score, Unicode word tokens)", True, _rouge_l),
        Metric("edit_similarity", "Indel edit similarity in [0, 1] (rapidfuzz fuzz.ratio / 100)", True, _edit_similarity),
        Metric("exact_match", "the stripped prediction equals the stripped reference (TRACE's accuracy)", True,
               _exact_match),
        Metric("answer_choice", "the letter after 'Answer: ' matches the reference's (TRACE's ScienceQA accuracy)",
               True, _answer_choice),
        Metric("py150_similarity", "edit similarity after restoring Py150 literal placeholders (TRACE's Py150)", True,
               _py150_similarity),
        Metric("sari", "SARI (Xu et al. 2016) / 100: kept, deleted and added n-grams vs. source and reference", True,
               _sari, needs_source=True),
        Metric("none", "no task metric: a task dir without task.json, read by a loss-only command", True, _no_metric),
    ]
}


def get_metric(name: str) -> Metric:
    """The metric registered under `name`; MclError listing the known names otherwise."""
    if name not in METRICS:
        raise MclError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def chance_level(metric: Metric, pool: Sequence[str], references: Sequence[str], seed: int = 0, rounds: int = 4,
                 sources: Sequence[str] | None = None) -> float:
    """Mean score of answers drawn at random from `pool` (e.g. the train answers) against `references`."""
    rng = random.Random(seed)
    return sum(metric([rng.choice(pool) for _ in references], references, sources) for _ in range(rounds)) / rounds
