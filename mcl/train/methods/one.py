"""ONE: a fresh LoRA per task, each scored on its own task (the no-interference reference).

All adapters (`task0`, `task1`, ...) are created at set-up; phase k trains `task<k>` alone.
Task i is scored with its own adapter once trained, and with the base model before that.
"""

from __future__ import annotations

from contextlib import nullcontext

from mcl.adapters import add_lora, save_adapter
from mcl.train.methods.base import Method, active_adapter, freeze_adapter, register


@register
class One(Method):
    """One independent LoRA adapter per task."""

    name = "one"
    title = "One LoRA per task (ONE)"
    reference = "reference in Ren et al. 2024"

    def setup(self, base_model, spec, seed):
        model = add_lora(base_model, spec, "task0", seed=seed)
        for k in range(1, len(self.ctx.tasks)):
            add_lora(model, spec, f"task{k}", seed=seed + k)
        return model

    def begin_task(self, phase, task_ids):
        peft = self.ctx.peft
        peft.base_model.set_adapter(f"task{phase}")
        for name in peft.peft_config:
            freeze_adapter(peft, name, frozen=name != f"task{phase}")

    def eval_view(self, view, task_index, phase):
        peft = self.ctx.peft
        if task_index <= phase:
            return active_adapter(peft, f"task{task_index}")
        return peft.disable_adapter() if hasattr(peft, "disable_adapter") else nullcontext()

    def save_task(self, out_dir, meta):
        save_adapter(self.ctx.peft, out_dir, f"task{meta['phase']}", meta)
