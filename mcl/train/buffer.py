"""Episodic memory: a fixed-capacity replay buffer filled by reservoir sampling (Vitter's Algorithm R).

It stores unpadded token ids and labels (and the task index) of every example offered; sampling
pads at read time with the tokenizer's pad id, label -100 and an attention mask. Its state is
plain tensors, saved with safetensors in the run's resume state.
"""

from __future__ import annotations

import torch

from mcl.data.tokenize import Encoded, collate


class ReservoirBuffer:
    """Reservoir sampling over every example seen; uniform sampling for replay."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError("buffer capacity must be >= 1")
        self.capacity = capacity
        self.items: list[tuple[list[int], list[int], int]] = []
        self.n_seen = 0
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, examples: list[Encoded], tasks: list[int]) -> None:
        """Offer each example to the reservoir (kept with probability capacity / n_seen)."""
        for ex, task in zip(examples, tasks):
            self.n_seen += 1
            item = (list(ex.input_ids), list(ex.labels), task)
            if len(self.items) < self.capacity:
                self.items.append(item)
                continue
            j = int(torch.randint(0, self.n_seen, (1,), generator=self.generator))
            if j < self.capacity:
                self.items[j] = item

    def tasks(self) -> set[int]:
        """Task indices present in the buffer."""
        return {t for _, _, t in self.items}

    def sample(self, n: int, pad_id: int) -> dict[str, torch.Tensor]:
        """A padded batch of n examples drawn uniformly (without replacement when possible)."""
        if not self.items:
            raise ValueError("cannot sample from an empty buffer")
        if n <= len(self.items):
            idx = torch.randperm(len(self.items), generator=self.generator)[:n]
        else:
            idx = torch.randint(0, len(self.items), (n,), generator=self.generator)
        chosen = [self.items[i] for i in idx.tolist()]
        return collate([Encoded(ids, labels) for ids, labels, _ in chosen], pad_id)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors: concatenated ids/labels, lengths, tasks, counters and RNG state."""
        lengths = torch.tensor([len(i) for i, _, _ in self.items], dtype=torch.long)
        flat = [t for i, _, _ in self.items for t in i]
        flat_lab = [t for _, lab, _ in self.items for t in lab]
        return {
            "ids": torch.tensor(flat, dtype=torch.long),
            "labels": torch.tensor(flat_lab, dtype=torch.long),
            "lengths": lengths,
            "tasks": torch.tensor([t for _, _, t in self.items], dtype=torch.long),
            "counters": torch.tensor([self.capacity, self.n_seen], dtype=torch.long),
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict()` output."""
        self.capacity, self.n_seen = (int(x) for x in state["counters"])
        ids, labels = state["ids"].tolist(), state["labels"].tolist()
        self.items, pos = [], 0
        for length, task in zip(state["lengths"].tolist(), state["tasks"].tolist()):
            self.items.append((ids[pos : pos + length], labels[pos : pos + length], task))
            pos += length
        self.generator.set_state(state["rng"])
