"""The hook surface every continual-learning method implements, and the method registry.

The loop (mcl/train/loop.py) calls, per run: `check_base` (before the run dir exists) and `setup`; per
phase: `begin_task`, then per step `loss` (per micro-batch) → backward → `after_backward` → optimizer
step → `after_step` → `log_values`; then `end_task`, `save_task` and evaluation through `eval_view`.
It never branches on a method's name.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, ContextManager, Iterator

import torch

from mcl.adapters import LoraSpec, add_lora, get_state, lora_parameters, save_adapter, set_state
from mcl.errors import MclError

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: add a method to the registry under `cls.name`."""
    METHODS[cls.name] = cls
    return cls


@dataclass
class Context:
    """What a method may use: the model, tokenizer, accelerator, config and encoded task data."""

    model: Any
    tokenizer: Any
    accelerator: Any
    config: Any
    tasks: list[str]
    train_data: list[Any] = field(default_factory=list)
    loss_fn: Any = None
    run_dir: Path | None = None  # where the run writes (snapshots); None outside a run
    sharing: Any = None  # how the processes share the model (mcl.train.parallel); None: one process

    @property
    def peft(self):
        """The unwrapped PeftModel."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def sharded(self) -> bool:
        """Whether parameters are FSDP2 shards: every forward is then collective (all processes run it alike)."""
        return bool(getattr(self.sharing, "sharded", False))

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of `params` over the processes (after an extra backward of a method's own)."""
        if self.sharing is not None:
            self.sharing.reduce_gradients(params)


class Method:
    """Base class: vanilla sequential LoRA fine-tuning with one adapter named `default`."""

    name: ClassVar[str] = "base"
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}  # allowed values of non-numeric args
    bounds: ClassVar[dict[str, tuple[float, float]]] = {}  # inclusive ranges of numeric args (default [0, ∞))
    views: ClassVar[tuple[str, ...]] = ("main",)
    produces_lora: ClassVar[bool] = True  # its task checkpoints are LoRA adapters (what the path analysis reads)
    fsdp: ClassVar[bool] = True  # runs with train.fsdp (its state and extra forwards work on sharded parameters)

    def __init__(self, ctx: Context, **args: Any):
        self.ctx = ctx
        self.args = {**self.defaults, **args}

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        """Reject unknown method_args keys and out-of-range or wrongly typed values with a one-line error."""
        unknown = sorted(set(args) - set(cls.defaults))
        if unknown:
            known = ", ".join(sorted(cls.defaults)) or "none"
            raise MclError(f"unknown method_args key {unknown[0]!r} for method {cls.name!r} (known: {known})")
        for key, value in args.items():
            default, where = cls.defaults[key], f"method_args.{key} ({cls.name})"
            if key in cls.choices:
                if value not in cls.choices[key]:
                    raise MclError(f"{where} must be one of {cls.choices[key]}, got {value!r}")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise MclError(f"{where} must be a number, got {value!r}")
                if isinstance(default, int) and not float(value).is_integer():
                    raise MclError(f"{where} must be an integer, got {value!r}")
                lo, hi = cls.bounds.get(key, (0.0, math.inf))
                if not lo <= value <= hi:
                    raise MclError(f"{where} must lie in [{lo}, {hi}], got {value!r}")

    def check_base(self, base_model) -> None:
        """Refuse arguments the base model cannot serve (one-line MclError), before the run dir exists."""

    # --- set-up and schedule -------------------------------------------------------------------
    def setup(self, base_model, spec: LoraSpec, seed: int):
        """Wrap the base model with this method's adapter(s); return the PeftModel."""
        return add_lora(base_model, spec, "default", seed=seed)

    def phases(self, n_tasks: int) -> list[list[int]]:
        """Training phases as lists of task indices (default: one task per phase)."""
        return [[k] for k in range(n_tasks)]

    def trainable(self) -> list[torch.nn.Parameter]:
        """Parameters the optimizer updates in the current phase."""
        return [p for p in self.ctx.peft.parameters() if p.requires_grad]

    # --- hooks ---------------------------------------------------------------------------------
    def begin_task(self, phase: int, task_ids: list[int]) -> None:
        """Called before the first step of a phase."""

    def loss(self, batch: dict[str, torch.Tensor], task_ids: list[int]) -> torch.Tensor:
        """Training loss for one batch of the current phase."""
        return self.ctx.loss_fn(self.ctx.model, batch)

    def after_backward(self) -> None:
        """Called after backward, before clipping and the optimizer step (gradient surgery)."""

    def after_step(self, batch: dict[str, Any], task_ids: list[int], step: int) -> None:
        """Called after each optimizer step with the step's `examples` and `task` ids (all its micro-batches)."""

    def end_task(self, phase: int, task_ids: list[int]) -> None:
        """Called after the last step of a phase."""

    def log_values(self) -> dict[str, float]:
        """Extra values of the last step for metrics/train_log.csv (e.g. loss terms; every process calls it)."""
        return {}

    def record(self) -> dict[str, Any]:
        """Facts of this method's set-up that each metrics/phase-<k>.json records (e.g. replay memory per process)."""
        return {}

    # --- evaluation and checkpoints ------------------------------------------------------------
    def base_view(self) -> ContextManager:
        """Context in which the model is the bare base model (its scores are the FWT baseline)."""
        return self.ctx.peft.disable_adapter()

    def eval_view(self, view: str, task_index: int, phase: int) -> ContextManager:
        """Context in which the model is scored as `view` on task `task_index` after `phase`."""
        return nullcontext()

    def save_task(self, out_dir: Path, meta: dict[str, Any]) -> None:
        """Write this phase's adapter(s) as PEFT dirs under out_dir (every process calls it; the main one writes)."""
        save_adapter(self.ctx.peft, out_dir, "default", meta)

    def adapter_names(self) -> list[str]:
        """Adapters whose tensors go into the resume state."""
        return list(self.ctx.peft.peft_config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Method tensors for the resume state (adapters are saved by the loop)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict()` output."""


def _tuner_layers(peft_model) -> tuple[list[Any], list[torch.nn.Parameter]]:
    """The model's PEFT tuner layers and their adapter tensors, cached on the model per set of adapters.

    The cache holds parameter objects, never detached views; preparing the model for several processes
    drops it (mcl.train.parallel.drop_caches).
    """
    key = tuple(peft_model.peft_config)
    cached = peft_model.__dict__.get("_mcl_tuner_layers")
    if cached is None or cached[0] != key:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
        params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
        cached = peft_model.__dict__["_mcl_tuner_layers"] = (key, layers, params)
    return cached[1], cached[2]


@contextmanager
def active_adapter(peft_model, name: str | list[str]) -> Iterator[None]:
    """Temporarily make `name` the active adapter(s), keeping every requires_grad flag unchanged.

    Switches the cached tuner layers directly (no walk over the model's modules and parameters), so an
    I-LoRA step can swap learners cheaply at any model size.
    """
    layers, params = _tuner_layers(peft_model)
    grads = [p.requires_grad for p in params]
    before = peft_model.base_model.active_adapter
    try:
        for layer in layers:
            layer.set_adapter(name)
        peft_model.base_model.active_adapter = name
        yield
    finally:
        for layer in layers:
            layer.set_adapter(before)
        peft_model.base_model.active_adapter = before
        for p, g in zip(params, grads):
            p.requires_grad_(g)


def copy_adapter(peft_model, src: str, dst: str) -> None:
    """Overwrite adapter `dst`'s LoRA tensors with `src`'s."""
    set_state(peft_model, get_state(peft_model, src), dst)


def freeze_adapter(peft_model, name: str, frozen: bool = True) -> None:
    """Set requires_grad=False (or True) on every LoRA tensor of one adapter."""
    for p in lora_parameters(peft_model, name).values():
        p.requires_grad_(not frozen)
