"""The training objective of curve fitting: answer loss on batches drawn from one or several tasks' train data.

`TaskObjective(tokenizer, tasks).loss(model, step)` takes one batch per task, each batch's token-pooled
answer loss by the loss convention (docs/design.md §3, LM head at label positions only), and averages over
tasks. The batch of a step depends only on (seed, step), so a resumed fit sees the same data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mcl.data.task import Task
from mcl.data.tokenize import TextFormat, encode_examples, pad_id
from mcl.errors import MclError
from mcl.eval.loss import label_batch, label_token_losses


class TaskObjective:
    """Mean over tasks of the answer loss on one train batch per task (deterministic per step)."""

    def __init__(self, tokenizer, tasks: Sequence[Task], split: str = "train", batch_size: int = 8,
                 max_len: int = 256, seed: int = 0, text: TextFormat | None = None):
        """Tokenise every task's `split` once (by the `text` format)."""
        if not tasks:
            raise MclError("curve fitting needs at least one task (--tasks TASK ...)")
        self.encoded = [encode_examples(tokenizer, t.split(split), max_len, text) for t in tasks]
        self.pad, self.batch_size, self.seed = pad_id(tokenizer), batch_size, seed

    def loss(self, model: torch.nn.Module, step: int) -> torch.Tensor:
        """The differentiable objective at `step`."""
        rng = np.random.default_rng([self.seed, step, 2])
        device = next(model.parameters()).device
        losses = []
        for encoded in self.encoded:
            idx = rng.choice(len(encoded), size=min(self.batch_size, len(encoded)), replace=False).tolist()
            batch = label_batch([encoded[i] for i in idx], self.pad, idx).to(device)
            losses.append(label_token_losses(model, batch).mean())
        return torch.stack(losses).mean()
