"""Wrapping a base model with LoRA, and views of the live LoRA tensors of a PEFT model.

Keys are PEFT's on-disk names (the adapter name removed), e.g.
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, so a state read from an adapter
dir and a state taken from a live model line up key for key.
"""

from __future__ import annotations

import re

import torch
from peft import PeftModel, get_peft_model

from mcl.adapters.spec import ALL_LINEAR, LoraSpec
from mcl.errors import MclError

__all__ = ["ALL_LINEAR", "LoraSpec", "add_lora", "check_targets", "get_state", "linear_module_names",
           "lora_parameters", "set_state"]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (nn.Linear, GPT-2's Conv1D), the LM head left out."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, (torch.nn.Linear, Conv1D)) and "lora_" not in name
                   and not name.endswith("lm_head")})


def check_targets(model: torch.nn.Module, spec: LoraSpec) -> None:
    """One-line MclError when a LoRA target names no linear layer of `model` (the error lists the names), or when
    the rank exceeds a targeted layer's smaller dimension (ΔW's rank cannot: the factors would only add memory)."""
    if isinstance(spec.target_modules, str):  # a PEFT keyword such as "all-linear"
        return
    names = linear_module_names(model)
    missing = [t for t in spec.target_modules if t not in names]
    if missing:
        raise MclError(f"lora.target_modules {missing} match no linear layer of this model; its linear layers: "
                       f"{', '.join(names)} (set e.g. lora.target_modules=[{','.join(names[:2])}])")
    dims: dict[str, int] = {}
    for name, m in model.named_modules():
        if (short := name.rsplit(".", 1)[-1]) in spec.target_modules and hasattr(m, "weight"):
            dims[short] = min(dims.get(short, m.weight.shape[0]), *m.weight.shape)
    smallest = min(dims, key=dims.get)
    if spec.r > dims[smallest]:
        raise MclError(f"lora.r={spec.r} exceeds the rank a {smallest} update can have ({dims[smallest]}, its smaller "
                       f"dimension): use lora.r <= {dims[smallest]}")


def add_lora(model, spec: LoraSpec | None = None, adapter_name: str = "default", seed: int | None = None) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter (or add one more adapter to a PeftModel)."""
    spec = spec or LoraSpec()
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, spec.to_peft())
        return model
    check_targets(model, spec)
    return get_peft_model(model, spec.to_peft(), adapter_name=adapter_name)


def _saved_key(param_name: str, adapter_name: str) -> str:
    key = re.sub(rf"\.{re.escape(adapter_name)}(?=\.|$)", "", param_name)
    return key.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")  # DoRA, as peft saves it


def lora_parameters(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.nn.Parameter]:
    """Live LoRA parameters of one adapter, keyed by PEFT's saved-state names."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name and re.search(rf"\.{re.escape(adapter_name)}(\.|$)", name):
            out[_saved_key(name, adapter_name)] = p
    if not out:
        raise ValueError(f"model has no LoRA parameters for adapter {adapter_name!r}")
    return out


def is_sharded(t: torch.Tensor) -> bool:
    """Whether `t` is a DTensor (a shard of a parameter under FSDP2)."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor shard is gathered (a collective: every process must call it), others pass."""
    return t.full_tensor() if is_sharded(t) else t


def get_state(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """A detached copy of one adapter's LoRA tensors (whole tensors: gathered, on every process, when sharded)."""
    return {k: full_tensor(p.detach()).clone() for k, p in lora_parameters(model, adapter_name).items()}


@torch.no_grad()
def set_state(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    adapter_name: str = "default",
    params: dict[str, torch.nn.Parameter] | None = None,
    where: str = "adapter state",
) -> None:
    """Copy `state` into the live LoRA tensors in place (pass `params` to skip the name lookup; shards take their part).

    A state whose keys or shapes differ from the live tensors is a one-line MclError naming `where` and
    the first difference (e.g. a resume state of another LoRA configuration).
    """
    params = params if params is not None else lora_parameters(model, adapter_name)
    if params.keys() != state.keys():
        key = sorted(set(params) ^ set(state))[0]
        side = "the model" if key in params else where
        raise MclError(f"{where} does not match the model's LoRA tensors: {key} exists only in {side}")
    for k, p in params.items():
        if p.shape != state[k].shape:
            raise MclError(f"{where} does not match the model's LoRA tensors: {k} is {tuple(state[k].shape)}, "
                           f"the model's is {tuple(p.shape)}")
        if is_sharded(p):  # every process holds the whole state: each takes its own shard of it, no communication
            from torch.distributed.tensor import distribute_tensor

            p.copy_(distribute_tensor(state[k].to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None))
        else:
            p.copy_(state[k])
