"""How the processes of a run share the model: one process, replicas or FSDP2 shards (a registry).

The loop prepares the model once per run, right after the method's set-up, and never re-wraps it:
- `single`: one process; the model as it is.
- `replicas` (torchrun, several processes): every process holds the whole model; after the last
  micro-step of an optimizer step mcl averages the trainable gradients over the processes in one flat
  all-reduce. It does not wrap the model in torch DDP: DDP fixes the trainable parameters when it wraps
  (ONE and O-LoRA change them per phase) and, on CPU, gives every parameter new storage.
- `fsdp` (`train.fsdp: true`, several processes): torch FSDP2 `fully_shard` on every decoder layer (the
  model's `_no_split_modules`), the embeddings, the decoder and the root, over gloo on CPU or NCCL on
  GPUs. Base weights, LoRA adapters (I-LoRA's slow one alike) and AdamW state are sharded; FSDP
  reduce-scatters the gradients.
  Adapters are gathered to full tensors when saved (plain PEFT dirs), the optimizer state is saved as a
  full state dict (torch.distributed.checkpoint), and scoring runs every example on every process
  through the sharded model, since its forwards are collective.
Preparing drops every cache of model tensors (the `_mcl_*` entries methods keep on the model), so no
cache outlives the parameters it points into.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, ClassVar, ContextManager

import torch

from mcl.errors import MclError


def drop_caches(model: torch.nn.Module) -> None:
    """Forget every cache of model tensors kept on `model` (entries named `_mcl_*`)."""
    for key in [k for k in model.__dict__ if k.startswith("_mcl_")]:
        del model.__dict__[key]


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: a DTensor's local shard, any other tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


class OneProcess:
    """One process: nothing to synchronise, scoring covers every example."""

    name: ClassVar[str] = "single"
    sharded: ClassVar[bool] = False  # True: forwards are collective and parameters are DTensor shards
    split_scoring: ClassVar[bool] = True  # each process scores every N-th example (N = 1 here)

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def check(self, base) -> None:
        """Refuse a base model this sharing cannot prepare (before the run dir appears)."""

    def prepare(self, peft) -> Any:
        """The model the loop trains (prepared once per run)."""
        drop_caches(peft)
        return peft

    def no_sync(self, model, last: bool) -> ContextManager:
        """Context for one micro-step's backward; gradients are synchronised only when `last`."""
        return nullcontext()

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Make the gradients of `params` the mean over the processes (in place)."""

    def optimizer_state(self, model, optimizer) -> dict[str, Any]:
        """The optimizer state to save (every process calls it; the main one's result is written)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, model, optimizer, state: dict[str, Any]) -> None:
        """Restore `optimizer_state` output."""
        optimizer.load_state_dict(state)


class Replicas(OneProcess):
    """Whole-model replicas; mcl all-reduces the trainable gradients after each optimizer step's backward."""

    name = "replicas"

    def reduce_gradients(self, params):
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.accelerator.num_processes
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


class Shards(OneProcess):
    """torch FSDP2 (`fully_shard`) over the units of `fsdp_units`; applied by mcl, not accelerate."""

    name = "fsdp"
    sharded = True
    split_scoring = False  # every process runs every scoring forward (they are collective)

    def check(self, base):
        fsdp_units(base)

    def prepare(self, peft):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        hf = peft.get_base_model()
        mesh = init_device_mesh(self.accelerator.device.type, (self.accelerator.num_processes,))
        for unit in fsdp_units(hf):
            fully_shard(unit, mesh=mesh)
        # FSDP makes the first module run its root; scoring runs the decoder alone first, so settle the root
        # now (torch has no public call for it). This also settles the shards' storage before any cache.
        fully_shard.state(hf)._lazy_init()
        hf._is_fsdp_managed_module = True  # transformers' generate then keeps the processes' decode steps together
        _keep_output_recording(hf)
        self.root = hf
        drop_caches(peft)
        return peft

    def no_sync(self, model, last):
        self.root.set_requires_gradient_sync(last)
        return nullcontext()

    def optimizer_state(self, model, optimizer):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, _inner(optimizer), options=options)

    def load_optimizer_state(self, model, optimizer, state):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, _inner(optimizer), optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))


def fsdp_units(hf) -> list[torch.nn.Module | list[torch.nn.Module]]:
    """What `fully_shard` wraps, innermost first: each decoder layer, the embeddings, the decoder, the root.

    The decoder and the output head are units of their own because scoring calls them apart (the LM head
    only at label positions, mcl.eval.loss); tied input and output embeddings form one unit.
    """
    kinds = set(getattr(hf, "_no_split_modules", None) or ())
    layers = [m for m in hf.modules() if type(m).__name__ in kinds]
    if not layers:
        raise MclError(f"train.fsdp: {type(hf).__name__} names no decoder layer class (_no_split_modules) to shard by; "
                       f"set train.fsdp: false")
    embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    embeddings = [[embed, head]] if tied else [m for m in (embed, head) if m is not None]
    return [*layers, *embeddings, hf.get_decoder(), hf]


def _keep_output_recording(hf) -> None:
    """Register FSDP's renamed model classes (`FSDP<name>`) where transformers looks up which outputs to record.

    transformers 5 records hidden states (I-LoRA's consistency loss) by hooks it finds by the model's class name.
    """
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # a transformers without that registry records outputs without it
        return
    for module in hf.modules():
        if getattr(module, "_can_record_outputs", None):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs


def _inner(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


SHARING: dict[str, type[OneProcess]] = {cls.name: cls for cls in (OneProcess, Replicas, Shards)}


def sharing_for(fsdp: bool, accelerator) -> OneProcess:
    """The sharing of a run: FSDP2 shards when `fsdp` and several processes, replicas when several, else single."""
    several = accelerator.num_processes > 1
    return SHARING["fsdp" if fsdp and several else "replicas" if several else "single"](accelerator)


ACCELERATE_PLUGINS = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_FSDP": "accelerate's FSDP plugin"}


def refuse_accelerate_plugins() -> None:
    """A one-line MclError when accelerate is configured for DeepSpeed or its own FSDP (mcl shards by itself)."""
    for var, what in ACCELERATE_PLUGINS.items():
        if os.environ.get(var, "false").lower() in ("true", "1", "yes"):
            raise MclError(f"mcl train does not run under {what} ({var} is set): for sharded training set "
                           f"train.fsdp: true (torch FSDP2) and launch with torchrun or accelerate without that plugin")

