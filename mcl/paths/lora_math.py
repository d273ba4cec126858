"""Per-module view of a LoRA state: which keys are A and B, each module's scale s, ΔW = s·B·A.

Ranks come from tensor shapes and α from `alpha_pattern`/`lora_alpha`, so adapters with different
ranks, rank patterns or rsLoRA are all read the same way. Also the content hash that names an adapter
in path specs and sweep caches (tensors and the config fields that change ΔW).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch

from mcl.adapters import AdapterState
from mcl.adapters.compat import pattern_value
from mcl.errors import MclError

FACTOR_SUFFIXES = {  # saved-key suffix of A → (suffix of B, is an embedding: ΔW = (B·A)ᵀ)
    ".lora_A.weight": (".lora_B.weight", False),
    ".lora_embedding_A": (".lora_embedding_B", True),
}
HASHED_CONFIG = ("r", "lora_alpha", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "fan_in_fan_out")


@dataclass(frozen=True)
class LoraTerm:
    """One adapted module: its saved-key prefix, the keys of A and B, and whether ΔW is transposed."""

    module: str
    a_key: str
    b_key: str
    transposed: bool

    @property
    def relative_module(self) -> str:
        """Module name inside the base model (PEFT's `base_model.model.` prefix removed)."""
        return self.module.removeprefix("base_model.model.")


def lora_terms(state: AdapterState, space: str) -> list[LoraTerm]:
    """The (A, B) pairs of a state; any other tensor is a one-line error (this space needs plain LoRA)."""
    if state.config.get("use_dora"):
        raise MclError(f"{state.label}: DoRA adapters can be interpolated in factors space only, not {space}")
    terms, used = [], set()
    for key in sorted(state.tensors):
        for a_suffix, (b_suffix, embedding) in FACTOR_SUFFIXES.items():
            if key.endswith(a_suffix):
                module = key[: -len(a_suffix)]
                if module + b_suffix not in state.tensors:
                    raise MclError(f"{state.label}: {key} has no matching {module + b_suffix}")
                transposed = embedding or bool(state.config.get("fan_in_fan_out"))
                terms.append(LoraTerm(module, key, module + b_suffix, transposed))
                used |= {key, module + b_suffix}
    extra = sorted(set(state.tensors) - used)
    if extra:
        raise MclError(f"{state.label}: tensor {extra[0]} is not a LoRA A/B factor; {space} space needs plain LoRA")
    return terms


def module_scale(state: AdapterState, term: LoraTerm) -> float:
    """The LoRA scale s of one module (α/r, or α/√r with rsLoRA), r read from the A tensor's shape."""
    r = state.tensors[term.a_key].shape[0]
    alpha = pattern_value(state.config.get("alpha_pattern"), term.relative_module)
    alpha = state.config.get("lora_alpha", r) if alpha is None else alpha
    return alpha / math.sqrt(r) if state.config.get("use_rslora") else alpha / r


def delta_weight(state: AdapterState, term: LoraTerm) -> torch.Tensor:
    """ΔW = s·B·A of one module, in the layout of the base module's weight."""
    dw = module_scale(state, term) * (state.tensors[term.b_key] @ state.tensors[term.a_key])
    return dw.T if term.transposed else dw


def content_hash(state: AdapterState) -> str:
    """SHA-256 of an adapter's tensors (keys, dtypes, shapes, bytes) and the config fields that shape ΔW."""
    h = hashlib.sha256(json.dumps({k: state.config.get(k) for k in HASHED_CONFIG}, sort_keys=True).encode())
    for key in sorted(state.tensors):
        t = state.tensors[key].detach().contiguous().cpu()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
