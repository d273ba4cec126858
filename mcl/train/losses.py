"""Training losses under the loss convention (docs/design.md §3): CE on answer tokens only.

The LM head runs only at positions whose next token is labelled (the union over the batch, via
`logits_to_keep`), so the full-vocabulary logits of prompts and padding are never computed.
`to_device` finds those positions (and the non-padding ones) on the CPU before the batch moves, so a GPU step never waits on the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcl.models.prefix import input_positions


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is labelled in any row (where the LM head must run)."""
    return (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)


def to_device(batch: dict, device: torch.device | str, positions: bool = False) -> dict:
    """The batch's tensors on `device` (non-blocking), plus `keep` (label positions) read before the move.

    `positions=True` also adds `valid` (flat non-padding positions) and `lengths` (row lengths, a list),
    which I-LoRA's slow forward and consistency loss use on the replay batch.
    """
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "labels" in batch and "keep" not in batch:
        out["keep"] = label_positions(batch["labels"]).to(device, non_blocking=True)
    if positions and "valid" not in batch:
        out["valid"] = batch["attention_mask"].flatten().nonzero().squeeze(1).to(device, non_blocking=True)
        out["lengths"] = batch["attention_mask"].sum(1).tolist()
    return out


def answer_ce(model, batch: dict[str, torch.Tensor], output_hidden_states: bool = False):
    """(sum of token CE, number of label tokens, model outputs) for a padded batch."""
    target = batch["labels"][:, 1:]
    keep = batch["keep"] if "keep" in batch else label_positions(batch["labels"])
    with input_positions(lambda: batch["labels"] == -100):  # the prompt, for input-conditioned prefixes (L2P)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            logits_to_keep=keep,
            output_hidden_states=output_hidden_states,
            use_cache=False,
        )
    tgt = target[:, keep]
    loss_sum = F.cross_entropy(out.logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=-100, reduction="sum")
    return loss_sum, (tgt != -100).sum(), out


def mean_ce(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-pooled mean CE over the batch's label tokens."""
    loss_sum, n, _ = answer_ce(model, batch)
    return loss_sum / n.clamp(min=1)
