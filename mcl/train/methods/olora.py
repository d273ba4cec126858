"""O-LoRA: a new LoRA per task, orthogonal to the earlier tasks' LoRA subspaces.

Phase k trains adapter `task<k>` while `task0..task<k-1>` stay frozen and active (their ΔW are
summed). Loss = CE + λ1 Σ_{j<k} Σ_modules |A_j A_kᵀ|₁ + λ2 Σ ‖θ_k‖₂ (Wang et al. 2023 defaults
λ1 = 0.5, λ2 = 0). The checkpoint after task k is one PEFT dir holding the sum as a rank
concatenation (rank (k+1)·r), so analysis tools read it like any LoRA.
"""

from __future__ import annotations

import json
import math

import torch

from mcl.adapters import AdapterState, add_lora, get_state, lora_parameters, write_adapter_dir
from mcl.errors import MclError
from mcl.io import is_main_process
from mcl.train.methods.base import Method, freeze_adapter, register


@register
class OLoRA(Method):
    """Orthogonal subspace LoRA."""

    name = "olora"
    title = "O-LoRA"
    reference = "Wang et al. 2023, 'Orthogonal Subspace Learning for Language Model Continual Learning'"
    defaults = {"lambda_orth": 0.5, "lambda_l2": 0.0}
    fsdp = False  # the orthogonality term multiplies whole A matrices

    def setup(self, base_model, spec, seed):
        if spec.use_dora:
            raise MclError("olora does not support DoRA adapters (their sum is not a LoRA)")
        model = add_lora(base_model, spec, "task0", seed=seed)
        for k in range(1, len(self.ctx.tasks)):
            add_lora(model, spec, f"task{k}", seed=seed + k)
        self.spec = spec
        return model

    def begin_task(self, phase, task_ids):
        peft = self.ctx.peft
        peft.base_model.set_adapter([f"task{j}" for j in range(phase + 1)])
        for name in peft.peft_config:
            freeze_adapter(peft, name, frozen=name != f"task{phase}")
        self.phase = phase

    def orthogonality(self, phase: int) -> torch.Tensor:
        """Σ over earlier adapters and modules of the L1 norm of A_j A_kᵀ (0 for orthogonal rows)."""
        peft = self.ctx.peft
        new = {k: p for k, p in lora_parameters(peft, f"task{phase}").items() if ".lora_A." in k}
        total = torch.zeros((), device=next(iter(new.values())).device)
        for j in range(phase):
            old = lora_parameters(peft, f"task{j}")
            for k, a_new in new.items():
                total = total + (old[k].detach() @ a_new.T).abs().sum()
        return total

    def loss(self, batch, task_ids):
        loss = super().loss(batch, task_ids) + float(self.args["lambda_orth"]) * self.orthogonality(self.phase)
        if self.args["lambda_l2"]:
            params = lora_parameters(self.ctx.peft, f"task{self.phase}").values()
            loss = loss + float(self.args["lambda_l2"]) * sum(p.norm() for p in params)
        return loss

    def save_task(self, out_dir, meta):
        peft, k = self.ctx.peft, meta["phase"]
        states = [get_state(peft, f"task{j}") for j in range(k + 1)]
        cat = {key: torch.cat([s[key] for s in states], dim=0 if ".lora_A." in key else 1) for key in states[0]}
        config = json.loads(json.dumps(peft.peft_config["task0"].to_dict(),
                                       default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
        grow = math.sqrt(k + 1) if self.spec.use_rslora else k + 1  # keep the scale s = alpha/r (or /sqrt r)
        config.update(r=self.spec.r * (k + 1), lora_alpha=self.spec.alpha * grow,
                      target_modules=sorted(config["target_modules"]), peft_type="LORA", task_type="CAUSAL_LM")
        from mcl.models import base_model_id

        if is_main_process():  # every process gathered the states above; one writes
            write_adapter_dir(AdapterState(config=config, tensors=cat,
                                           meta={"base_model": base_model_id(peft.get_base_model()), **meta}), out_dir)
