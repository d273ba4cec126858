"""`docqa`: multiple-choice cloze questions on Python's reference documentation (answer A-D).

Mirrors TRACE's ScienceQA/MedMCQA multiple-choice tasks. Source: `pydoc_data.topics` (excluded from
the tiny model's pretraining). A passage (24 words, at most 180 characters; windows overlap by
half) has one occurrence of a word that it uses at least twice replaced by a blank; the options are
that word and three words from the same documentation that do not occur in the passage, so the
passage determines the answer. Splits never share a documentation topic.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from mcl.data.suite.common import Sizes, Splits, SuiteTask, split_groups
from mcl.data.task import Example, TaskSpec

LETTERS = "ABCD"
WINDOW = 24
STRIDE = 12
MAX_CHARS = 180
PER_TOPIC = 80
BLANK = "____"
_WORD = re.compile(r"\b[A-Za-z]{4,}\b")
STOP = set(
    "that this with from have which when where there their then than them they will would should could also into only "
    "some such each other these those must been being more most what were while does used uses using following".split()
)


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return topics


def _vocabulary(texts: list[str]) -> list[str]:
    counts = Counter(w.lower() for t in texts for w in _WORD.findall(t))
    return sorted(w for w, c in counts.items() if c >= 5 and w not in STOP)


def _questions(window: str, vocab: list[str], rng: random.Random) -> list[Example]:
    counts = Counter(w.lower() for w in _WORD.findall(window))
    present = set(counts)
    out = []
    for word in sorted(w for w, c in counts.items() if c >= 2 and w not in STOP):
        matches = list(re.finditer(rf"\b{word}\b", window, re.IGNORECASE))
        last = matches[-1]
        passage = window[: last.start()] + BLANK + window[last.end() :]
        options = [word] + rng.sample([w for w in vocab if w not in present], 3)
        rng.shuffle(options)
        listed = "\n".join(f"{letter}. {opt}" for letter, opt in zip(LETTERS, options))
        prompt = f"Passage: {passage}\nWhich word fills the blank?\n{listed}\nAnswer:"
        out.append(Example(prompt, LETTERS[options.index(word)]))
    return out


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Cloze questions from half-overlapping windows, at most 80 per topic; each topic in one split."""
    topics = _topics()
    vocab = _vocabulary([topics[k] for k in sorted(topics)])
    names = sorted(topics)
    rng.shuffle(names)
    groups = []
    for name in names:
        words = topics[name].split()
        windows = [" ".join(words[i : i + WINDOW]) for i in range(0, len(words), STRIDE)]
        qs = [q for w in windows if len(w) <= MAX_CHARS for q in _questions(w, vocab, rng)]
        groups.append(rng.sample(qs, min(PER_TOPIC, len(qs))))
    return split_groups("docqa", groups, sizes, rng)


TASK = SuiteTask(
    TaskSpec(
        name="docqa",
        metric="accuracy",
        max_new_tokens=3,
        labels=list(LETTERS),
        description="Which option fills the blank in this Python documentation passage?",
        source="Python reference documentation (pydoc_data.topics), cloze with 3 distractors",
        answer_format="letter A-D",
    ),
    make,
)
