"""`stance`: stance of a social-media post towards a target (favor / against / none), synthetic.

Mirrors TRACE's C-STANCE task in English. A post praises or criticises the target issue (favor /
against), or talks about something unrelated to any local issue (none). A first version made
"none" a post about another listed issue; the tiny model stayed at chance on it (0.34 after 100
LoRA steps), so "none" posts are now off-topic chatter.
"""

from __future__ import annotations

import random

from mcl.data.suite.common import Sizes, Splits, SuiteTask, draw_unique
from mcl.data.task import Example, TaskSpec

LABELS = ["against", "favor", "none"]
TARGETS = [
    "bike lanes", "the new stadium", "remote work", "school uniforms", "electric buses", "the four-day week",
    "rent control", "the night market", "solar panels", "the library hours", "a sugar tax", "the tram line",
    "street parking", "the music festival", "tree planting", "the dog park",
]
PRAISE = ["is the best thing to happen here", "deserves more money", "makes life so much better", "should be expanded",
          "is working really well", "gets my full support", "was a great idea", "should stay for good"]
CRITICISM = ["is a total waste of money", "should be scrapped", "has been a disaster", "makes everything worse",
             "is not working at all", "gets no support from me", "was a terrible idea", "needs to go now"]
OFF_TOPIC = ["the weather", "my cat", "this new song", "the football match", "my breakfast", "the traffic today",
             "this old movie", "my phone battery"]
CHATTER = ["is all I can think about", "made my morning", "keeps surprising me", "was on the news again",
           "is a funny story", "came up at dinner"]
OPENERS = ["", "Honestly, ", "I think ", "Let's be clear: ", "My view: ", "After a month, ", "Say what you want, "]
TAGS = ["", " #local", " #citylife", " Thoughts?", " Agree?", " #vote"]


def _post(rng: random.Random, about: str, positive: bool) -> str:
    opener = rng.choice(OPENERS)
    body = f"{about} {rng.choice(PRAISE if positive else CRITICISM)}"
    body = opener + body if opener else body[0].upper() + body[1:]
    return body + "." + rng.choice(TAGS)


def _chatter(rng: random.Random) -> str:
    opener = rng.choice(OPENERS)
    body = f"{rng.choice(OFF_TOPIC)} {rng.choice(CHATTER)}"
    body = opener + body if opener else body[0].upper() + body[1:]
    return body + "." + rng.choice(TAGS)


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Label-balanced synthetic posts: a third off-topic (none)."""
    def one(i: int) -> Example:
        label = LABELS[i % len(LABELS)]
        target = rng.choice(TARGETS)
        post = _chatter(rng) if label == "none" else _post(rng, target, label == "favor")
        return Example(f"Target: {target}\nPost: {post}\nStance:", label)

    return draw_unique("stance", sizes, one)


TASK = SuiteTask(
    TaskSpec(
        name="stance",
        metric="accuracy",
        max_new_tokens=6,
        labels=LABELS,
        description="Is this post for or against the target, or about something else?",
        source="synthetic (templated posts about 16 local issues, and off-topic chatter)",
        answer_format="label word (3 classes)",
    ),
    make,
)
