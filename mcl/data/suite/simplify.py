"""`simplify`: rewrite an official notice in plain words, synthetic.

Mirrors TRACE's 20Minuten simplification. A notice is built from slots, each with a formal and a
plain wording (e.g. "prior to" -> "before", "utilise" -> "use"); the answer is the same notice with
every slot in its plain wording, so the rewrite is determined by the input.
"""

from __future__ import annotations

import random

from mcl.data.suite.common import Sizes, Splits, SuiteTask, draw_unique
from mcl.data.task import Example, TaskSpec

SUBJECTS = [("The municipality", "The city"), ("Residents", "People"), ("The department", "The office"),
            ("All personnel", "All staff"), ("The aforementioned agency", "The agency"), ("Applicants", "People who apply"),
            ("The proprietor", "The owner"), ("Pupils", "Students")]
VERBS = [("will commence", "will start"), ("shall utilise", "will use"), ("are required to submit", "must send"),
         ("will endeavour to provide", "will try to give"), ("may purchase", "can buy"), ("will terminate", "will end"),
         ("must ascertain", "must find out"), ("will obtain", "will get")]
OBJECTS = [("additional parking permits", "more parking permits"), ("sufficient documentation", "enough papers"),
           ("the requisite forms", "the needed forms"), ("numerous repairs", "many repairs"),
           ("a modification to the schedule", "a change to the schedule"), ("assistance with heating", "help with heating"),
           ("the remuneration scheme", "the pay plan"), ("an alternative route", "another route")]
TIMES = [("prior to the deadline", "before the deadline"), ("subsequent to the inspection", "after the inspection"),
         ("at this point in time", "now"), ("in the event of snowfall", "if it snows"),
         ("on a monthly basis", "every month"), ("for the duration of the works", "during the works"),
         ("in the vicinity of the station", "near the station"), ("with immediate effect", "right away")]


def _notice(rng: random.Random) -> Example:
    parts = [rng.choice(slot) for slot in (SUBJECTS, VERBS, OBJECTS, TIMES)]
    formal = " ".join(p[0] for p in parts) + "."
    plain = " ".join(p[1] for p in parts) + "."
    return Example(f"Formal: {formal}\nPlain:", plain)


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Synthetic notices and their plain rewrites."""
    return draw_unique("simplify", sizes, lambda i: _notice(rng))


TASK = SuiteTask(
    TaskSpec(
        name="simplify",
        metric="rouge_l",
        max_new_tokens=32,
        description="Rewrite this official notice in plain words.",
        source="synthetic (notices from 4 slots with formal/plain wordings)",
        answer_format="rewritten sentence",
    ),
    make,
)
