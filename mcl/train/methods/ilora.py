"""I-LoRA (Ren et al. 2024): a fast LoRA learner and a slow one that follows it along the linear path.

Both adapters live on one base model (`fast`, `slow`; the slow one never gets gradients). After
every optimizer step, with probability `update_prob`, slow ← point(1−λ_k) of the linear path from
slow to fast in `space` (factor space by default), λ_k = min(1 − 1/(k+1), λ) (CLS-ER warm-up).
Once the reservoir buffer holds earlier tasks: loss = CE(current, replay) + γ·MSE(H_fast, Z) on the
replay batch's non-padding positions of the selected layers, with Z = max(H_fast, H_slow) (released
code) or H_slow. The R matrix uses the slow learner (`inference`), the fast one is reported beside it.
See shared/ILORA.md for the spec and the released code's defects this file avoids.
"""

from __future__ import annotations

import torch

from mcl.adapters import AdapterState, add_lora, lora_parameters, save_adapter, set_state
from mcl.errors import MclError
from mcl.paths import Linear
from mcl.train.losses import answer_ce
from mcl.train.methods.base import active_adapter, copy_adapter, freeze_adapter, register
from mcl.train.methods.er import ER

TARGETS = ("max", "slow")


@register
class ILoRA(ER):
    """Interpolation-based LoRA: EMA slow learner on the linear path + replay + consistency."""

    name = "ilora"
    title = "I-LoRA (mcl defaults)"
    reference = "Ren et al. 2024, 'Analyzing and Reducing Catastrophic Forgetting in Parameter Efficient Tuning'"
    defaults = {
        "ema_lambda": 0.99,
        "update_prob": 1.0,
        "space": "factors",
        "consistency_weight": 1.0,
        "consistency_target": "max",
        "layers": "all",
        "replay_weighting": "mean",
        "buffer_size": 500,
        "inference": "slow",
    }

    def __init__(self, ctx, **args):
        super().__init__(ctx, **args)
        if self.args["consistency_target"] not in TARGETS:
            raise MclError(f"consistency_target must be one of {TARGETS}")
        if self.args["inference"] not in ("slow", "fast"):
            raise MclError("inference must be 'slow' or 'fast'")
        if not 0.0 <= float(self.args["ema_lambda"]) <= 1.0 or not 0.0 <= float(self.args["update_prob"]) <= 1.0:
            raise MclError("ema_lambda and update_prob must lie in [0, 1]")
        if self.args["space"] != "factors":
            raise MclError("ilora supports space=factors only: a delta-space step would grow the slow adapter's rank")
        other = "fast" if self.args["inference"] == "slow" else "slow"
        self.views = (self.args["inference"], other)
        self.updates = 0
        self.update_rng = torch.Generator().manual_seed(ctx.config.train.seed + 2)

    def setup(self, base_model, spec, seed):
        model = add_lora(base_model, spec, "fast", seed=seed)
        with torch.random.fork_rng(devices=[]):  # the global RNG stream stays as for a one-adapter method
            add_lora(model, spec, "slow")
        copy_adapter(model, "fast", "slow")  # both learners start at the same point
        model.base_model.set_adapter("fast")
        freeze_adapter(model, "slow")
        freeze_adapter(model, "fast", frozen=False)
        return model

    # --- slow learner ------------------------------------------------------------------------
    def current_lambda(self) -> float:
        """λ_k = min(1 − 1/(k+1), λ) at update count k (CLS-ER warm-up)."""
        return min(1.0 - 1.0 / (self.updates + 1), float(self.args["ema_lambda"]))

    @torch.no_grad()
    def update_slow(self) -> None:
        """slow ← point(1 − λ_k) on the linear path slow → fast (mcl.paths), written in place."""
        peft = self.ctx.peft
        lam = self.current_lambda()
        cfg = peft.peft_config["slow"].to_dict()
        # live tensors, no copies: point() builds new tensors before set_state writes into slow
        slow = AdapterState(config=cfg, tensors={k: p.detach() for k, p in self._slow_params.items()})
        fast = AdapterState(config=cfg, tensors={k: p.detach() for k, p in lora_parameters(peft, "fast").items()})
        point = Linear(slow, fast, space=self.args["space"]).point(1.0 - lam)
        set_state(peft, point.tensors, "slow", params=self._slow_params)
        self.updates += 1

    def after_step(self, batch, task_ids, step):
        if float(self.args["update_prob"]) >= 1.0 or torch.rand((), generator=self.update_rng) < float(self.args["update_prob"]):
            self.update_slow()
        super().after_step(batch, task_ids, step)

    @property
    def _slow_params(self):
        if not hasattr(self, "_slow_cache"):
            self._slow_cache = lora_parameters(self.ctx.peft, "slow")
        return self._slow_cache

    # --- loss --------------------------------------------------------------------------------
    def _select(self, hidden: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        layers = hidden[1:]  # decoder layer outputs (index 0 is the embedding output)
        choice = self.args["layers"]
        if choice == "all":
            return list(layers)
        if choice == "last":
            return [layers[-1]]
        return [layers[int(i)] for i in choice]

    def consistency(self, h_fast: list[torch.Tensor], h_slow: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error between fast states and Z over non-padding positions of the selected layers."""
        m = mask.bool()
        total, count = 0.0, 0
        for hw, hl in zip(h_fast, h_slow):
            z = torch.maximum(hw, hl) if self.args["consistency_target"] == "max" else hl
            diff = (hw - z.detach())[m]
            total = total + (diff.float() ** 2).sum()
            count += diff.numel()
        return total / max(count, 1)

    def loss(self, batch, task_ids):
        cur = answer_ce(self.ctx.model, batch)[:2]
        replay = self.replay_batch(task_ids, len(batch["input_ids"]))
        if replay is None:
            return self.combine(cur, None)
        s, n, out = answer_ce(self.ctx.model, replay, output_hidden_states=True)
        loss = self.combine(cur, (s, n))
        gamma = float(self.args["consistency_weight"])
        if gamma:
            with torch.no_grad(), active_adapter(self.ctx.peft, "slow"):
                slow_out = self.ctx.peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"],
                                         output_hidden_states=True, logits_to_keep=1, use_cache=False)
            loss = loss + gamma * self.consistency(self._select(out.hidden_states), self._select(slow_out.hidden_states),
                                                   replay["attention_mask"])
        return loss

    @torch.no_grad()
    def log_values(self):
        """ER's CE terms, the consistency term when the step stored it in `terms`, and ‖slow − fast‖ (factors)."""
        fast = lora_parameters(self.ctx.peft, "fast")
        dist = sum(float(((p - fast[k]) ** 2).sum()) for k, p in self._slow_params.items()) ** 0.5
        return {**super().log_values(), "slow_fast_dist": dist}

    # --- evaluation, checkpoints, resume -----------------------------------------------------
    def eval_view(self, view, task_index, phase):
        return active_adapter(self.ctx.peft, view)

    def save_task(self, out_dir, meta):
        for name in ("fast", "slow"):
            save_adapter(self.ctx.peft, out_dir / name, name, {**meta, "learner": name})

    def state_dict(self):
        state = super().state_dict()
        state["ilora.updates"] = torch.tensor([self.updates])
        state["ilora.update_rng"] = self.update_rng.get_state()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "ilora.updates" in state:
            self.updates = int(state["ilora.updates"][0])
            self.update_rng.set_state(state["ilora.update_rng"])


@register
class ILoRAReleased(ILoRA):
    """The released code's intended settings (λ = 0.25, γ = 1, max target, all layers, fast at inference)."""

    name = "ilora-released"
    title = "I-LoRA, released-code preset"
    defaults = {**ILoRA.defaults, "ema_lambda": 0.25, "consistency_weight": 1.0, "consistency_target": "max",
                "layers": "all", "inference": "fast"}
