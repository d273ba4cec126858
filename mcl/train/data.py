"""Training data for a run: tasks encoded once, and a deterministic batch order.

The batch at (phase, micro-step) is a pure function of the seed, so a resumed run draws exactly the
batches an uninterrupted one would. Each process of a multi-process run takes its slice of the
same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from mcl.data import Task
from mcl.data.tokenize import Encoded, TextFormat, collate, encode_examples


@dataclass
class TaskData:
    """One task of a run: its spec and examples, plus the training set encoded per the loss convention."""

    task: Task
    train: list[Encoded]

    @property
    def name(self) -> str:
        """Task name."""
        return self.task.name


def encode_tasks(tasks: list[Task], tokenizer, max_len: int, text: TextFormat | None = None) -> list[TaskData]:
    """Encode each task's train split by the loss convention and the run's text format."""
    return [TaskData(t, encode_examples(tokenizer, t.split("train"), max_len, text)) for t in tasks]


@lru_cache(maxsize=8)
def _order(n: int, seed: int, phase: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + phase * 10_007 + epoch)
    return torch.randperm(n, generator=g)


def make_batch(data: list[TaskData], task_ids: list[int], spec, phase: int, micro_step: int, pad_id: int,
               rank: int = 0, world: int = 1) -> dict:
    """The global batch number `micro_step` of a phase (this process's slice), padded, with task ids."""
    pool = [(t, j) for t in task_ids for j in range(len(data[t].train))]
    n, b = len(pool), spec.batch_size
    picks = []
    for pos in range(micro_step * b, micro_step * b + b):
        epoch, within = divmod(pos, n)
        picks.append(pool[int(_order(n, spec.seed, phase, epoch)[within])])
    picks = picks[rank::world]
    examples = [data[t].train[j] for t, j in picks]
    batch = collate(examples, pad_id)
    batch.update(examples=examples, task=[t for t, _ in picks])
    return batch
