"""SARI (Xu et al. 2016, "Optimizing Statistical Machine Translation for Text Simplification").

No maintained SARI package installs offline here (`evaluate` fetches its metric scripts from the hub;
EASSE is not on PyPI), so this is a small stand-alone implementation of the variant that HF
`evaluate`'s `sari` metric computes (tensor2tensor's SARI with 0/0 = 1 and its corrected keep
recall), which is what TRACE reports for 20Minuten. Sentences are lower-cased and split into word and
punctuation tokens; n-grams of order 1-4 are compared between the source, the prediction and the
references:

- keep: F1 of the source n-grams the prediction keeps, against the ones the references keep
- delete: precision of the source n-grams the prediction drops, against the ones the references drop
- add: F1 of the new n-grams the prediction introduces, against those in the references

SARI = mean over orders of (keep F1 + delete precision + add F1) / 3, in [0, 1] (HF reports × 100).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

MAX_ORDER = 4
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _order_scores(src: Counter, pred: Counter, refs: list[Counter]) -> tuple[float, float, float]:
    """(keep F1, delete precision, add F1) for one n-gram order."""
    k = len(refs)
    ref_all: Counter = sum(refs, Counter())
    src_k = Counter({g: c * k for g, c in src.items()})
    pred_k = Counter({g: c * k for g, c in pred.items()})

    kept = src_k & pred_k
    kept_good = kept & ref_all
    kept_all = src_k & ref_all
    keep_p = sum(kept_good[g] / kept[g] for g in kept) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0

    deleted = src_k - pred_k
    deleted_good = deleted - ref_all
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted) / len(deleted) if deleted else 1.0

    added = set(pred) - set(src)
    added_all = set(ref_all) - set(src)
    added_good = added & set(ref_all)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(added_all) if added_all else 1.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def sari_parts(source: str, prediction: str, references: Sequence[str]) -> dict[str, float]:
    """{"keep", "del", "add", "sari"} of one prediction, each in [0, 1]."""
    if not references:
        raise ValueError("SARI needs at least one reference")
    s, p, rs = tokens(source), tokens(prediction), [tokens(r) for r in references]
    parts = [_order_scores(_ngrams(s, n), _ngrams(p, n), [_ngrams(r, n) for r in rs]) for n in range(1, MAX_ORDER + 1)]
    keep, dele, add = (sum(x[i] for x in parts) / MAX_ORDER for i in range(3))
    return {"keep": keep, "del": dele, "add": add, "sari": (keep + dele + add) / 3}


def sari(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI of one prediction against its source and references, in [0, 1]."""
    return sari_parts(source, prediction, references)["sari"]
