"""`meeting`: one-line decision summary of short meeting minutes, synthetic.

Mirrors TRACE's MeetingBank summarisation. Minutes name the body, include routine sentences and one
vote; the summary states the body, what it decided on which item, and the vote, e.g.
"Transit board approved new bus routes, 5-2." Every word of it is determined by the minutes.
"""

from __future__ import annotations

import random

from mcl.data.suite.common import Sizes, Splits, SuiteTask, draw_unique
from mcl.data.task import Example, TaskSpec

BODIES = ["City council", "School board", "Planning committee", "Transit board", "Library board", "Parks commission",
          "Housing authority", "Water board"]
ITEMS = ["new bus routes", "the park budget", "a library expansion", "the water rate increase", "a bike share pilot",
         "the road repair plan", "a youth center", "new street lights", "the recycling contract", "a teacher pay raise",
         "the zoning change", "a public pool", "the snow plan", "free transit days", "a tree program", "the parking fee"]
ACTIONS = {"approve": "approved", "reject": "rejected", "delay": "delayed", "fund": "funded", "review": "reviewed"}
PEOPLE = ["Ms. Diaz", "Mr. Okafor", "Dr. Lee", "Ms. Novak", "Mr. Haas", "Ms. Ito", "Mr. Ruiz", "Dr. Patel"]
ROUTINE = [
    "{p} read the minutes of the last meeting.",
    "{p} gave the treasurer's report.",
    "Public comment lasted {n} minutes.",
    "{p} asked about {other}.",
    "The meeting opened at {h} p.m.",
    "{p} thanked the staff.",
]
VOTES = [
    "Members voted {y} to {n} to {a} {item}.",
    "By a vote of {y}-{n}, the board chose to {a} {item}.",
    "A motion to {a} {item} passed {y}-{n}.",
]


def _minutes(rng: random.Random) -> Example:
    body, item = rng.choice(BODIES), rng.choice(ITEMS)
    action = rng.choice(sorted(ACTIONS))
    yes = rng.randint(4, 9)
    no = rng.randint(0, yes - 1)
    others = [x for x in ITEMS if x != item]
    routine = [
        r.format(p=rng.choice(PEOPLE), n=rng.randint(5, 40), other=rng.choice(others), h=rng.randint(5, 8))
        for r in rng.sample(ROUTINE, 2)
    ]
    vote = rng.choice(VOTES).format(y=yes, n=no, a=action, item=item)
    routine.insert(rng.randint(0, 2), vote)
    prompt = f"Minutes of the {body.lower()}. {' '.join(routine)}\nSummary:"
    return Example(prompt, f"{body} {ACTIONS[action]} {item}, {yes}-{no}.")


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Synthetic minutes with one vote each."""
    return draw_unique("meeting", sizes, lambda i: _minutes(rng))


TASK = SuiteTask(
    TaskSpec(
        name="meeting",
        metric="rouge_l",
        max_new_tokens=32,
        description="Summarise the decision in these meeting minutes in one line.",
        source="synthetic (templated minutes: routine items and one vote)",
        answer_format="one-line summary",
    ),
    make,
)
