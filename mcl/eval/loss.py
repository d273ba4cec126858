"""Teacher-forced task loss (docs/design.md §3), with the LM head applied only at label positions.

`LossEvaluator` tokenises and collates a fixed example set once (length-sorted batches, label
gather indices precomputed), so evaluating many models or adapter points on the same data costs
only the forward passes. It works for a plain HF causal LM and for a PeftModel wrapping one: the
decoder's final hidden states are gathered at the positions that predict a label token and only
those rows go through the output head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from mcl.data.task import Example
from mcl.data.tokenize import IGNORE, Encoded, TextFormat, collate, encode_examples, pad_id
from mcl.errors import MclError
from mcl.models.prefix import input_positions


@dataclass(frozen=True)
class LabelBatch:
    """A right-padded batch plus where its label tokens are: predicting rows/cols and target ids."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    example_index: torch.Tensor

    def to(self, device: torch.device) -> "LabelBatch":
        """The same batch on `device`."""
        return LabelBatch(*(t.to(device) for t in vars(self).values()))


def label_batch(encoded: Sequence[Encoded], pad: int, example_index: Sequence[int]) -> LabelBatch:
    """Collate encoded examples and locate each label token's predicting position (shifted by one)."""
    b = collate(encoded, pad)
    labels = b["labels"]
    rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    return LabelBatch(
        b["input_ids"], b["attention_mask"], rows, cols, labels[rows, cols + 1], torch.tensor(list(example_index))[rows]
    )


def backbone_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder (final hidden states) and output head of an HF causal LM or a PeftModel around one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(base).__name__} has no output embeddings (lm_head)")
    return base.get_decoder(), head


def label_token_losses(model, batch: LabelBatch) -> torch.Tensor:
    """Cross-entropy (float32) of every label token in the batch, in `batch.rows/cols` order."""
    decoder, head = backbone_and_head(model)

    def prompt() -> torch.Tensor:  # the input positions: every real token but the labelled ones
        mask = batch.attention_mask.clone()
        mask[batch.rows, batch.cols + 1] = 0
        return mask

    with input_positions(prompt):  # for input-conditioned prefixes (L2P's query)
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
    logits = head(hidden[batch.rows, batch.cols]).float()
    return F.cross_entropy(logits, batch.targets, reduction="none")


class LossEvaluator:
    """Token-pooled answer loss of one fixed example set, prepared once for many evaluations."""

    def __init__(self, tokenizer, examples: Sequence[Example], batch_size: int = 32, max_len: int = 256,
                 text: TextFormat | None = None):
        """Tokenise (by the `text` format), length-sort and collate `examples` into batches of `batch_size`."""
        if batch_size < 1 or max_len < 1:
            raise MclError(f"batch_size and max_len must be >= 1 (got {batch_size}, {max_len})")
        encoded = encode_examples(tokenizer, examples, max_len, text)
        order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].input_ids), i))
        pad = pad_id(tokenizer)
        self.n = len(encoded)
        self.batches = [
            label_batch([encoded[i] for i in idx], pad, idx)
            for idx in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
        ]
        self.n_tokens = sum(len(b.targets) for b in self.batches)
        h = hashlib.sha256(f"max_len={max_len};".encode())
        for e in encoded:
            h.update(torch.tensor(e.input_ids + [-1] + e.labels + [-2], dtype=torch.int64).numpy().tobytes())
        self.data_hash = h.hexdigest()
        self._on_device: dict[str, list[LabelBatch]] = {"cpu": self.batches}

    def _batches_on(self, device: torch.device) -> list[LabelBatch]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = [b.to(device) for b in self.batches]
        return self._on_device[key]

    @torch.inference_mode()
    def example_losses(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed label-token loss and label-token count (float64, in input order)."""
        was_training = model.training
        model.eval()
        try:
            sums = torch.zeros(self.n, dtype=torch.float64)
            counts = torch.zeros(self.n, dtype=torch.float64)
            for b in self._batches_on(next(model.parameters()).device):
                losses = label_token_losses(model, b).double().cpu()
                idx = b.example_index.cpu()
                sums.index_add_(0, idx, losses)
                counts.index_add_(0, idx, torch.ones_like(losses))
        finally:
            model.train(was_training)
        return sums, counts

    def loss(self, model) -> float:
        """Mean cross-entropy over all label tokens of the set (sum ÷ count); an empty set is an error, not 0."""
        if not self.n_tokens:
            raise MclError(f"nothing to evaluate: {self.n} example(s) with no answer token within max_len")
        sums, counts = self.example_losses(model)
        return float(sums.sum() / counts.sum())
