"""Training losses under the loss convention (docs/design.md §3): CE on answer tokens only.

The LM head runs only at positions whose next token is labelled (the union over the batch, via
`logits_to_keep`), so the full-vocabulary logits of prompts and padding are never computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_ce(model, batch: dict[str, torch.Tensor], output_hidden_states: bool = False):
    """(sum of token CE, number of label tokens, model outputs) for a padded batch."""
    target = batch["labels"][:, 1:]
    keep = (target != -100).any(0).nonzero().squeeze(1)
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
