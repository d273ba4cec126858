"""GEM: project the gradient so that it increases the loss on no earlier task's episodic memory.

Each task keeps its own episodic memory (a reservoir over that task's training examples; the run's
`buffer_size` is one global budget split evenly over the tasks and processes). After backward, one
reference gradient g_j per earlier task j is computed on a batch drawn from task j's memory. If the
current gradient g has g·g_j < 0 for some j, it is replaced by g̃ = Gᵀv + g, where v solves the dual
QP of Lopez-Paz & Ranzato (2017)

    min_v ½ vᵀ(G Gᵀ + εI)v + (G g)ᵀ v   subject to v ≥ memory_strength,

(the margin `memory_strength` as in the authors' code and the seed code's `gem_memory_strength`;
ε = 1e-6 × the mean of diag(G Gᵀ) only keeps the factorisation defined, where the authors add an
absolute 1e-3 that would dominate LoRA gradients' small Gram matrices). At the optimum
G g̃ ≥ −εv (≥ 0 exactly when ε = 0): the update increases no earlier task's memory loss to first order.
The QP has one variable per earlier task; it is solved exactly by scipy's NNLS after a Cholesky
factorisation, in float64 on the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mcl.train.buffer import ReservoirBuffer
from mcl.train.losses import to_device
from mcl.train.methods.base import Method, register


def solve_dual(P: np.ndarray, c: np.ndarray, margin: float = 0.0, eps: float = 0.0) -> np.ndarray:
    """argmin_v ½ vᵀ(P + εI)v + cᵀv subject to v ≥ margin (exact, via Cholesky + NNLS)."""
    from scipy.linalg import cholesky, solve_triangular
    from scipy.optimize import nnls

    t = len(c)
    P = 0.5 * (P + P.T) + eps * np.eye(t)
    m = np.full(t, float(margin))
    b = P @ m + c  # v = m + u, u ≥ 0: ½ uᵀPu + bᵀu (+ const)
    L = cholesky(P, lower=True)  # P = L Lᵀ: ½ uᵀPu + bᵀu = ½ ‖Lᵀu + L⁻¹b‖² + const
    w = solve_triangular(L, b, lower=True)
    u, _ = nnls(L.T, -w)
    return m + u


def project(g: torch.Tensor, G: torch.Tensor, margin: float = 0.0, rel_eps: float = 1e-6) -> torch.Tensor:
    """GEM projection of a flat gradient `g` against reference gradients `G` (one per row)."""
    if bool((G @ g >= 0).all()):
        return g
    G64, g64 = G.double().cpu().numpy(), g.double().cpu().numpy()
    P = G64 @ G64.T
    v = solve_dual(P, G64 @ g64, margin, rel_eps * float(np.diag(P).mean()))
    return (torch.from_numpy(G64.T @ v + g64)).to(dtype=g.dtype, device=g.device)


@register
class GEM(Method):
    """Gradient Episodic Memory: a per-task memory and a QP projection of every update."""

    name = "gem"
    title = "Gradient Episodic Memory (GEM)"
    reference = "Lopez-Paz & Ranzato 2017, 'Gradient Episodic Memory for Continual Learning'"
    defaults = {"buffer_size": 500, "memory_strength": 0.5}
    bounds = {"buffer_size": (1, math.inf), "memory_strength": (0.0, math.inf)}
    fsdp = False  # the projection works on whole flat gradients

    def __init__(self, ctx, **args):
        super().__init__(ctx, **args)
        world, rank = ctx.accelerator.num_processes, ctx.accelerator.process_index
        per_task = max(1, int(self.args["buffer_size"]) // (len(ctx.tasks) * world))
        used = per_task * len(ctx.tasks)  # per process
        self.budget = {"buffer_size": used * world, "per_process": [used] * world, "per_task_per_process": per_task}
        seed = ctx.config.train.seed + 1 + 7919 * rank
        self.memories = [ReservoirBuffer(per_task, seed=seed + 104729 * j) for j in range(len(ctx.tasks))]
        self.projected = 0.0

    def loss(self, batch, task_ids):
        self._task_ids, self._batch_size = task_ids, len(batch["input_ids"])
        return self.ctx.loss_fn(self.ctx.model, batch)

    def earlier(self, task_ids: list[int]) -> list[int]:
        """Tasks outside the current phase whose memory holds examples."""
        return [j for j, m in enumerate(self.memories) if len(m) and j not in task_ids]

    def after_backward(self):
        earlier = self.earlier(self._task_ids)
        self.projected = 0.0
        if not earlier:
            return
        params = [p for p in self.trainable() if p.grad is not None]
        g = torch.cat([p.grad.flatten() for p in params])
        refs = []
        pad, device = self.ctx.tokenizer.pad_token_id, self.ctx.accelerator.device
        for j in earlier:
            for p in params:
                p.grad = None
            batch = to_device(self.memories[j].sample(self._batch_size, pad), device)
            self.ctx.loss_fn(self.ctx.model, batch).backward()
            self.ctx.reduce_gradients(params)  # the reference gradient over every process's memory, as g
            refs.append(torch.cat([p.grad.flatten() for p in params]))
        G = torch.stack(refs)
        new = project(g, G, float(self.args["memory_strength"]))
        self.projected = float(new is not g)
        offset = 0
        for p in params:
            p.grad = new[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def after_step(self, batch, task_ids, step):
        for ex, task in zip(batch["examples"], batch["task"]):
            self.memories[task].add([ex], [task])

    def log_values(self):
        """1.0 when the last step's gradient was projected, else 0.0."""
        return {"projected": self.projected}

    def record(self):
        """The episodic memory in use: per task and process, and in all."""
        return {"replay": self.budget}

    def state_dict(self):
        return {f"mem{j}.{k}": v for j, m in enumerate(self.memories) for k, v in m.state_dict().items()}

    def load_state_dict(self, state):
        for j, m in enumerate(self.memories):
            prefix = f"mem{j}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if part:
                m.load_state_dict(part)
