"""Training data for a run: tasks encoded once, and a deterministic batch order.

The batch at (phase, micro-step) is a pure function of the seed, so a resumed run draws exactly the
batches an uninterrupted one would. `batch_size` is per process: a micro-step's global batch holds
batch_size × processes examples and each process takes its slice of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from mcl.data import Task
from mcl.data.tokenize import IGNORE, Encoded, TextFormat, collate, encode_examples
from mcl.errors import MclError


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
    """Encode each task's train split by the loss convention and the run's text format.

    MclError when no answer token of a task's train split fits `max_len` (its loss would be 0/0).
    """
    data = [TaskData(t, encode_examples(tokenizer, t.split("train"), max_len, text)) for t in tasks]
    for d in data:
        if label_tokens(d.train) == 0:
            raise MclError(f"task {d.name} (train split): no answer token fits train.max_len={max_len}; raise it")
    return data


def check_batch_memory(model_config, data: list[TaskData], spec, act_bytes: int, available: int) -> None:
    """MclError when one micro-batch cannot fit `available` bytes even at the least a step must keep.

    The floor is each decoder layer's input for every token of the micro-batch (kept for backward even
    with gradient checkpointing), without padding: batch_size × the mean training example's length ×
    layers × hidden × `act_bytes`.
    """
    lengths = [len(ex.input_ids) for d in data for ex in d.train]
    length = math.ceil(sum(lengths) / len(lengths))
    per_token = model_config.num_hidden_layers * model_config.hidden_size * act_bytes
    need = spec.batch_size * length * per_token
    if need > available:
        fits = max(0, available // (length * per_token))
        raise MclError(f"train.batch_size={spec.batch_size} x {length} tokens (a mean training example) needs at "
                       f"least {need / 2**30:.1f} GiB for activations alone, more than this device's "
                       f"{available / 2**30:.1f} GiB: lower train.batch_size (to {fits} at the very most) and raise "
                       f"train.grad_accum to keep the global batch")


def length_warnings(tasks: list[Task], tokenizer, max_len: int, text: TextFormat | None, eval_spec) -> list[str]:
    """What a run's `max_len` cuts: one line per task and split that it cuts (train, and the scored eval split).

    The eval split counts generation prompts too when the run generates; a max_len that leaves no room for a
    prompt before `max_new_tokens` there is a MclError.
    """
    from mcl.eval.lengths import TaskLengths

    said = []
    for t in tasks:
        for split, examples, generate in (("train", t.split("train"), False),
                                          (eval_spec.split, t.split(eval_spec.split)[:eval_spec.max_examples],
                                           eval_spec.generate)):
            lengths = TaskLengths.measure(tokenizer, t.name, examples, t.spec.max_new_tokens, text)
            said.append(lengths.cuts(max_len, generate, split))
    return [f"{line} (train.max_len)" for line in said if line]


@lru_cache(maxsize=8)
def _order(n: int, seed: int, phase: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + phase * 10_007 + epoch)
    return torch.randperm(n, generator=g)


def _picks(data: list[TaskData], task_ids: list[int], spec, phase: int, micro_step: int, world: int) -> list[tuple[int, int]]:
    """(task, example) pairs of the global batch number `micro_step` of a phase (all processes)."""
    pool = [(t, j) for t in task_ids for j in range(len(data[t].train))]
    n, b = len(pool), spec.batch_size * world
    picks = []
    for pos in range(micro_step * b, micro_step * b + b):
        epoch, within = divmod(pos, n)
        picks.append(pool[int(_order(n, spec.seed, phase, epoch)[within])])
    return picks


def make_batch(data: list[TaskData], task_ids: list[int], spec, phase: int, micro_step: int, pad_id: int,
               rank: int = 0, world: int = 1) -> dict:
    """This process's slice (`spec.batch_size` examples) of the global batch `micro_step`, padded, with task ids."""
    picks = _picks(data, task_ids, spec, phase, micro_step, world)[rank::world]
    examples = [data[t].train[j] for t, j in picks]
    batch = collate(examples, pad_id)
    batch.update(examples=examples, task=[t for t, _ in picks])
    return batch


def label_tokens(examples: list[Encoded]) -> int:
    """Label tokens the training loss counts (every labelled position but the first)."""
    return sum(sum(1 for x in ex.labels[1:] if x != IGNORE) for ex in examples)


def step_label_tokens(data: list[TaskData], task_ids: list[int], spec, phase: int, micro_steps: range, world: int) -> int:
    """Label tokens of an optimizer step's micro-batches over all processes (the pooled loss's divisor)."""
    return sum(label_tokens([data[t].train[j] for t, j in _picks(data, task_ids, spec, phase, m, world)])
               for m in micro_steps)


def length_buckets(lengths: list[int], min_saving: float) -> list[tuple[list[int], int]]:
    """Rows of a right-padded batch split into at most two (rows, width) groups by length, when that saves work.

    The split point minimises the padded tokens a forward processes; it is taken only when it removes at
    least `min_saving` of them (one group of every row otherwise). Right padding and a causal model make
    each row's states at its own positions the same in a narrower batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    width, n = max(lengths), len(lengths)
    best, split = n * width, n
    for k in range(1, n):
        cost = k * lengths[order[k - 1]] + (n - k) * width
        if cost < best:
            best, split = cost, k
    if split == n or best > (1.0 - min_saving) * n * width:
        return [(list(range(n)), width)]
    return [(order[:split], lengths[order[split - 1]]), (order[split:], width)]
