"""ER: experience replay from a reservoir buffer, mixed into every batch from the second task on.

The step's examples (every micro-batch of it) are added to the buffer *after* the optimizer step,
so a replay batch never contains the batch being learned (the released I-LoRA code fills the buffer
first). `buffer_size` is one global budget: under torchrun each of N processes keeps a reservoir of
`buffer_size // N` examples (the first `buffer_size % N` processes one more) over the examples it trained
on, with its own sampling seed, saved and restored per rank; each metrics/phase-<k>.json records the split.
"""

from __future__ import annotations

import math

import torch

from mcl.errors import MclError
from mcl.train.buffer import ReservoirBuffer
from mcl.train.losses import answer_ce, to_device
from mcl.train.methods.base import Method, register

WEIGHTINGS = ("mean", "pooled")


@register
class ER(Method):
    """Experience replay with a reservoir buffer shared in design with I-LoRA."""

    name = "er"
    title = "Experience Replay (ER)"
    reference = "Chaudhry et al. 2019, 'On Tiny Episodic Memories in Continual Learning'"
    defaults = {"buffer_size": 500, "replay_weighting": "mean"}
    choices = {"replay_weighting": WEIGHTINGS}
    bounds = {"buffer_size": (1, math.inf)}
    replay_positions = False  # replay batches carry `valid`/`lengths` (to_device) when a subclass needs them

    def __init__(self, ctx, **args):
        super().__init__(ctx, **args)
        if self.args.get("replay_weighting", "mean") not in WEIGHTINGS:
            raise MclError(f"replay_weighting must be one of {WEIGHTINGS}")
        rank, world = ctx.accelerator.process_index, ctx.accelerator.num_processes
        total = int(self.args["buffer_size"])
        if total < world:
            raise MclError(f"method_args.buffer_size ({total}) is the replay memory of all {world} processes "
                           f"together: give at least one example per process")
        self.capacities = [total // world + (r < total % world) for r in range(world)]
        seed = ctx.config.train.seed + 1 + 7919 * rank  # rank 0: seed + 1, as before
        self.buffer = ReservoirBuffer(self.capacities[rank], seed=seed)

    def replay_batch(self, task_ids: list[int], size: int) -> dict[str, torch.Tensor] | None:
        """A replay batch once the buffer holds examples of tasks outside the current phase."""
        if not (self.buffer.tasks() - set(task_ids)):
            return None
        batch = self.buffer.sample(size, self.ctx.tokenizer.pad_token_id)
        return to_device(batch, self.ctx.accelerator.device, positions=self.replay_positions)

    def combine(self, cur: tuple, buf: tuple | None) -> torch.Tensor:
        """Mean of current and replay CE (released code), or CE pooled over all their tokens."""
        ce_cur = cur[0] / cur[1].clamp(min=1)
        self.terms = {"ce_cur": ce_cur.detach()}
        if buf is None:
            return ce_cur
        self.terms["ce_buf"] = (buf[0] / buf[1].clamp(min=1)).detach()
        if self.args["replay_weighting"] == "mean":
            return 0.5 * (cur[0] / cur[1].clamp(min=1) + buf[0] / buf[1].clamp(min=1))
        return (cur[0] + buf[0]) / (cur[1] + buf[1]).clamp(min=1)

    def loss(self, batch, task_ids):
        cur = answer_ce(self.ctx.model, batch)[:2]
        replay = self.replay_batch(task_ids, len(batch["input_ids"]))
        buf = answer_ce(self.ctx.model, replay)[:2] if replay is not None else None
        return self.combine(cur, buf)

    def after_step(self, batch, task_ids, step):
        self.buffer.add(batch["examples"], batch["task"])

    def log_values(self):
        """CE on the current batch and (once replay starts) on the replay batch."""
        return {k: float(v) for k, v in getattr(self, "terms", {}).items()}

    def record(self):
        """The replay budget and its split over the processes."""
        return {"replay": {"buffer_size": sum(self.capacities), "per_process": self.capacities}}

    def state_dict(self):
        return {f"buffer.{k}": v for k, v in self.buffer.state_dict().items()}

    def load_state_dict(self, state):
        if state:
            self.buffer.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("buffer.")})
