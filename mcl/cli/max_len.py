"""How the evaluating commands pick `max_len` per task, and say what it cuts.

In order: `--max-len N` when given; else the `max_len` the checkpoints were trained with (their mcl.json,
else their run's config.yaml: the largest when they differ), so a run's analysis scores the tokens its
training did; else what the task needs (its longest example, and when generating its longest prompt
plus the task's `max_new_tokens`), at most the model's context length. Whatever the source, a
`max_len` that cuts examples or generation prompts is said on stderr with the counts (one line per
task, by the main process), and one that leaves no room for a prompt before the new tokens is a
one-line error when generating (mcl.eval.lengths).
"""

from __future__ import annotations

import sys
from typing import Sequence

from mcl.data.task import Task
from mcl.data.tokenize import TextFormat


def task_max_lens(asked: int | None, recorded: Sequence[int | None], tasks: Sequence[Task], tokenizer, split: str,
                  limit: int | None, text: TextFormat, generate: bool, context: int | None = None) -> list[int]:
    """The max_len of each task (see the module docstring); warns on stderr about every cut it makes."""
    from mcl.analysis.distributed import launched
    from mcl.eval.lengths import TaskLengths

    lengths = [TaskLengths.measure(tokenizer, t.name, t.split(split)[:limit], t.spec.max_new_tokens, text)
               for t in tasks]
    known = [n for n in recorded if n is not None]
    if asked is not None:
        chosen, source = [asked] * len(tasks), "--max-len"
    elif known:
        chosen, source = [max(known)] * len(tasks), "the checkpoints' training run; --max-len overrides it"
    else:
        chosen = [min(n.needed(generate), context or n.needed(generate)) for n in lengths]
        source = "the data" + (f", at most the model's context of {context} tokens" if context else "")
    for n, max_len in zip(lengths, chosen):
        message = n.cuts(max_len, generate, split)
        if message and launched().main:
            print(f"warning: {message} (max_len from {source})", file=sys.stderr)
    return chosen


def model_context(model) -> int | None:
    """The longest sequence the model's config allows (max_position_embeddings), when it says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None
