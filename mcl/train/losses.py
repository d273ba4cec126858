"""Training losses under the loss convention (docs/design.md §3): CE on answer tokens only, and I-LoRA's gap term.

The LM head runs only at the positions whose next token is labelled (`head_at`, as evaluation does in
mcl/eval/loss.py): the full-vocabulary logits of prompts, padding and other rows' answer columns are
never computed. `to_device` finds those positions (and the non-padding ones) on the CPU before the batch
moves, so a GPU step never waits on the host.
`squared_gap` is the consistency term's per-layer sum of squares: it keeps no copy of the states (its
backward recomputes the gap from the two states it was given) and sums in fp32 without an fp32 copy.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mcl.models.prefix import input_positions


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Flat (row · length + column) positions whose next token is labelled: where the LM head must run."""
    return F.pad(labels[:, 1:] != -100, (0, 1)).flatten().nonzero().squeeze(1)


def to_device(batch: dict, device: torch.device | str, positions: bool = False) -> dict:
    """The batch's tensors on `device` (non-blocking), plus `label_at` (label positions) read before the move.

    `positions=True` also adds `valid` (flat non-padding positions) and `lengths` (row lengths, a list),
    which I-LoRA's slow forward and consistency loss use on the replay batch.
    """
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "labels" in batch and "label_at" not in batch:
        out["label_at"] = label_positions(batch["labels"]).to(device, non_blocking=True)
    if positions and "valid" not in batch:
        out["valid"] = batch["attention_mask"].flatten().nonzero().squeeze(1).to(device, non_blocking=True)
        out["lengths"] = batch["attention_mask"].sum(1).tolist()
    return out


def output_head(model) -> torch.nn.Module:
    """The LM head of an HF causal LM, of a PeftModel around one, or of either under DDP."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return model.get_output_embeddings()


@contextmanager
def head_at(model, flat: torch.Tensor) -> Iterator[None]:
    """Within: the model's LM head runs only on the flat (row · length + column) positions `flat` of its input.

    A pre-hook on the head gathers those rows inside the model's own forward (so DDP and sharded wrappers
    see a normal forward); the logits come out as (len(flat), vocab), in `flat`'s order.
    """
    def gather(module, args):
        return (args[0].flatten(0, -2).index_select(0, flat), *args[1:])

    handle = output_head(model).register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def answer_ce(model, batch: dict[str, torch.Tensor], output_hidden_states: bool = False):
    """(sum of token CE, number of label tokens, model outputs) for a padded batch; the head runs at labels only."""
    at = batch["label_at"] if "label_at" in batch else label_positions(batch["labels"])
    with input_positions(lambda: batch["labels"] == -100), head_at(model, at):  # prompt positions: for L2P's prefixes
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=output_hidden_states, use_cache=False)
    target = batch["labels"].flatten().index_select(0, at + 1)  # the token after each position (same row)
    loss_sum = F.cross_entropy(out.logits.float(), target, reduction="sum")
    return loss_sum, at.new_full((), at.numel()), out


def mean_ce(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-pooled mean CE over the batch's label tokens."""
    loss_sum, n, _ = answer_ce(model, batch)
    return loss_sum / n.clamp(min=1)


def _gap(fast: torch.Tensor, slow: torch.Tensor, at: torch.Tensor, negative_only: bool) -> torch.Tensor:
    gap = fast.flatten(0, -2).index_select(0, at).sub_(slow.flatten(0, -2).index_select(0, at))
    return gap.clamp_(max=0) if negative_only else gap


class _SquaredGap(torch.autograd.Function):
    """Σ (fast − slow)² over the rows `at` (its negative part only with `negative_only`), in fp32 (or fp64)."""

    @staticmethod
    def forward(ctx, fast, slow, at, negative_only):
        ctx.save_for_backward(fast, slow, at)  # fast is kept by the graph anyway, slow is needed for the gap
        ctx.negative_only = negative_only
        gap = _gap(fast, slow, at, negative_only)
        return torch.linalg.vector_norm(gap, dtype=torch.promote_types(gap.dtype, torch.float32)).square()

    @staticmethod
    def backward(ctx, grad):
        fast, slow, at = ctx.saved_tensors
        gap = _gap(fast, slow, at, ctx.negative_only).mul_(2 * grad)
        return torch.zeros_like(fast).flatten(0, -2).index_copy_(0, at, gap).view_as(fast), None, None, None


def squared_gap(fast: torch.Tensor, slow: torch.Tensor, at: torch.Tensor, negative_only: bool = False) -> torch.Tensor:
    """Σ over flat positions `at` of (fast − slow)², or of min(fast − slow, 0)² (fp32 scalar; grads to `fast`).

    `fast` and `slow` are (…, hidden) states of one layer; `at` indexes their flattened leading dimensions.
    Memory: nothing beyond references to the two states is kept for backward.
    """
    return _SquaredGap.apply(fast, slow.detach(), at, negative_only)
