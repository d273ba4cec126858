"""`fomc`: monetary-policy stance of a central-bank sentence (hawkish / dovish / neutral), synthetic.

Mirrors TRACE's FOMC task. A sentence reports an indicator moving (inflation rising reads hawkish,
unemployment rising dovish, a flat reading neutral) and often a policy signal that agrees with it
(raise, cut or hold rates); the label is determined by the sentence.
"""

from __future__ import annotations

import random

from mcl.data.suite.common import Sizes, Splits, SuiteTask, draw_unique
from mcl.data.task import Example, TaskSpec

LABELS = ["dovish", "hawkish", "neutral"]
# indicator -> +1 if its rise signals tighter policy, -1 if looser
INDICATORS = {
    "inflation": 1, "core inflation": 1, "wage growth": 1, "price pressure": 1, "consumer spending": 1,
    "housing demand": 1, "unemployment": -1, "labor market slack": -1, "jobless claims": -1, "credit stress": -1,
}
MOVES = {
    1: ["rose", "picked up", "moved higher", "accelerated", "increased sharply", "climbed further"],
    -1: ["fell", "eased", "moved lower", "slowed", "declined", "softened further"],
    0: ["was unchanged", "held steady", "was little changed", "remained stable", "was flat"],
}
SIGNALS = {
    "hawkish": ["further rate increases may be needed", "policy should tighten", "members favored a higher target rate",
                "balance sheet runoff should continue"],
    "dovish": ["a rate cut may be appropriate", "policy should ease", "members favored a lower target rate",
               "asset purchases could resume"],
    "neutral": ["the stance of policy is appropriate", "members will wait for more data", "rates were left as they were",
                "no change in policy was discussed"],
}
OPENERS = ["", "The Committee noted that ", "Officials said that ", "The minutes showed that ", "Staff reported that ",
           "Several members observed that "]
PERIODS = ["in the last quarter", "this month", "over the summer", "since the last meeting", "in recent months", "in March",
           "in the spring"]


def _sentence(rng: random.Random, label: str) -> str:
    indicator = rng.choice(sorted(INDICATORS))
    if label == "neutral":
        move = 0
    else:
        move = INDICATORS[indicator] * (1 if label == "hawkish" else -1)
    opener = rng.choice(OPENERS)
    clause = f"{indicator} {rng.choice(MOVES[move])} {rng.choice(PERIODS)}"
    text = opener + clause if opener else clause[0].upper() + clause[1:]
    if rng.random() < 0.5:
        text += f", and {rng.choice(SIGNALS[label])}"
    return text + "."


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Label-balanced synthetic policy sentences."""
    def one(i: int) -> Example:
        label = LABELS[i % len(LABELS)]
        return Example(f"Central bank: {_sentence(rng, label)}\nStance:", label)

    return draw_unique("fomc", sizes, one)


TASK = SuiteTask(
    TaskSpec(
        name="fomc",
        metric="accuracy",
        max_new_tokens=6,
        labels=LABELS,
        description="Is this central-bank sentence hawkish, dovish or neutral?",
        source="synthetic (FOMC-style sentences: indicator moves and policy signals)",
        answer_format="label word (3 classes)",
    ),
    make,
)
