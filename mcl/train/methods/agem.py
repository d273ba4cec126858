"""A-GEM: project the gradient so that it does not increase the loss on a replay batch.

After backward, if g·g_ref < 0 (g_ref: gradient on a batch from the reservoir buffer), the update
uses g − (g·g_ref / g_ref·g_ref) g_ref instead, whose dot product with g_ref is zero.
"""

from __future__ import annotations

import torch

from mcl.train.methods.er import ER
from mcl.train.methods.base import register


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM projection of a flat gradient against a flat reference gradient."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - dot / torch.dot(g_ref, g_ref).clamp(min=1e-12) * g_ref


@register
class AGEM(ER):
    """Averaged Gradient Episodic Memory, with the same reservoir buffer as ER."""

    name = "agem"
    title = "Averaged GEM (A-GEM)"
    reference = "Chaudhry et al. 2019, 'Efficient Lifelong Learning with A-GEM'"
    defaults = {"buffer_size": 500}
    fsdp = False  # the projection works on whole flat gradients

    def loss(self, batch, task_ids):
        self._task_ids = task_ids
        self._batch_size = len(batch["input_ids"])
        return self.ctx.loss_fn(self.ctx.model, batch)

    def after_backward(self):
        replay = self.replay_batch(self._task_ids, self._batch_size)
        if replay is None:
            return
        params = [p for p in self.trainable() if p.grad is not None]
        g = torch.cat([p.grad.flatten() for p in params])
        for p in params:
            p.grad = None
        self.ctx.loss_fn(self.ctx.model, replay).backward()
        self.ctx.reduce_gradients(params)  # the reference gradient over every process's replay batch, as g
        g_ref = torch.cat([p.grad.flatten() for p in params])
        g = project(g, g_ref)
        offset = 0
        for p in params:
            p.grad = g[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
