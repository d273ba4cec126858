"""`code`: complete the next line of Python source, from stdlib files the tiny model never saw.

Mirrors TRACE's Py150 task. Source: the `task` split of the standard library (`mcl.data.sources`),
held out of the tiny model's pretraining. The prompt is up to 6 preceding lines (at most 200
characters, ending in a newline); the answer is the next line (8-60 characters) with its
indentation. Splits never share a file.
"""

from __future__ import annotations

import random

from mcl.data.sources import read_text, stdlib_files, stdlib_root
from mcl.data.suite.common import Sizes, Splits, SuiteTask, split_groups
from mcl.data.task import Example, TaskSpec

CONTEXT_LINES = 6
CONTEXT_CHARS = 200
PER_FILE = 20


def _is_target(line: str) -> bool:
    s = line.strip()
    return 8 <= len(s) <= 60 and not s.startswith(("#", '"""', "'''")) and line.isascii()


def _file_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        context = [ln.rstrip() for ln in lines[max(0, i - CONTEXT_LINES) : i]]
        while context and len("\n".join(context)) > CONTEXT_CHARS:
            context.pop(0)
        if _is_target(line) and sum(bool(c.strip()) for c in context) >= 2:
            out.append(Example("\n".join(context) + "\n", line.rstrip()))
    return out


def make(rng: random.Random, sizes: Sizes) -> Splits:
    """Up to 20 next-line examples per held-out stdlib file (distinct prompts); each file in one split."""
    files = sorted(stdlib_files("task"), key=lambda f: f.relative_to(stdlib_root()).as_posix())
    rng.shuffle(files)
    groups, seen = [], set()
    for f in files:
        exs = []
        for e in _file_examples(read_text(f)):
            if e.prompt not in seen:
                seen.add(e.prompt)
                exs.append(e)
        groups.append(rng.sample(exs, min(PER_FILE, len(exs))))
    return split_groups("code", groups, sizes, rng)


TASK = SuiteTask(
    TaskSpec(
        name="code",
        metric="edit_similarity",
        max_new_tokens=40,
        description="Write the next line of this Python code.",
        source="Python standard library, files held out of the tiny model's pretraining",
        answer_format="one line of Python",
    ),
    make,
)
