"""EWC: a quadratic penalty anchoring the LoRA parameters, weighted by a diagonal Fisher.

After each task the empirical Fisher (mean squared gradient of the task loss over
`fisher_batches` training batches) is added to the running Fisher (older terms decayed by
`fisher_decay`, 1.0 = plain accumulation) and the current parameters become the anchor.
"""

from __future__ import annotations

import torch

from mcl.train.data import make_batch
from mcl.train.methods.base import Method, register


@register
class EWC(Method):
    """Elastic Weight Consolidation on the LoRA parameters."""

    name = "ewc"
    title = "Elastic Weight Consolidation (EWC)"
    reference = "Kirkpatrick et al. 2017, 'Overcoming catastrophic forgetting in neural networks'"
    defaults = {"ewc_lambda": 100.0, "fisher_batches": 16, "fisher_decay": 1.0}
    bounds = {"fisher_batches": (1, 1_000_000), "fisher_decay": (0.0, 1.0)}
    fsdp = False  # Fisher and anchor are whole tensors

    def __init__(self, ctx, **args):
        super().__init__(ctx, **args)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def _named(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.ctx.peft.named_parameters() if p.requires_grad}

    def penalty(self) -> torch.Tensor:
        """(λ/2) Σ F (θ − θ*)² over the anchored parameters (0 before the first task ends)."""
        total = torch.zeros((), device=self.ctx.accelerator.device)
        for n, p in self._named().items():
            if n in self.fisher:
                total = total + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return 0.5 * float(self.args["ewc_lambda"]) * total

    def loss(self, batch, task_ids):
        return super().loss(batch, task_ids) + self.penalty()

    def end_task(self, phase, task_ids):
        named = self._named()
        fresh = {n: torch.zeros_like(p) for n, p in named.items()}
        cfg, ctx = self.ctx.config, self.ctx
        model = ctx.peft
        model.eval()
        for b in range(int(self.args["fisher_batches"])):
            batch = make_batch(ctx.train_data, task_ids, cfg.train, phase + 10_000, b, ctx.tokenizer.pad_token_id)
            batch = {k: v.to(ctx.accelerator.device) for k, v in batch.items() if torch.is_tensor(v)}
            model.zero_grad(set_to_none=True)
            ctx.loss_fn(model, batch).backward()
            for n, p in named.items():
                if p.grad is not None:
                    fresh[n] += p.grad.detach() ** 2 / int(self.args["fisher_batches"])
        model.zero_grad(set_to_none=True)
        decay = float(self.args["fisher_decay"])
        self.fisher = {n: decay * self.fisher.get(n, 0) + f for n, f in fresh.items()}
        self.anchor = {n: p.detach().clone() for n, p in named.items()}

    def state_dict(self):
        return {**{f"fisher.{n}": f for n, f in self.fisher.items()}, **{f"anchor.{n}": a for n, a in self.anchor.items()}}

    def load_state_dict(self, state):
        self.fisher = {k[7:]: v for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[7:]: v for k, v in state.items() if k.startswith("anchor.")}
