"""Merged forwards: evaluate a factor- or delta-space point as W0 + ΔW(t) written into the base weights.

A point of a plain-LoRA space (factors, delta) changes the model only through ΔW = s·B·A per module,
so the forward pass can run on merged weights instead of PEFT's unmerged LoRA layers (one matmul per
module instead of three): the same function up to float rounding, and faster, so sweeps use it by
default. `MergedForwardBinding` writes W0 + ΔW(t) at each `apply` through the merged space's binding: in
place for fp32 weights (W0 copied back bit for bit on close), into an fp32 working copy of each adapted
weight on bf16/fp16 bases and for tied weights (the module then computes in fp32; its own weights are
never touched), so no base precision rounds ΔW away; a GPU without room for those copies keeps PEFT's
layers. DoRA adapters are not a plain ΔW and keep the unmerged binding.
"""

from __future__ import annotations

import sys

import torch

from mcl.adapters import AdapterState
from mcl.errors import MclError
from mcl.paths.curves import InterpolationPath
from mcl.paths.lora_math import delta_weight, lora_terms, module_scale
from mcl.paths.spaces import Binding, MergedSpace, working_copy_bytes

MERGEABLE_SPACES = ("factors", "delta")


def delta_state(point: AdapterState) -> AdapterState:
    """ΔW of every module of a plain-LoRA point, keyed `<module>.weight` (the merged space's layout)."""
    return AdapterState(dict(point.config), {t.module + ".weight": delta_weight(point, t)
                                             for t in lora_terms(point, "merged")})


class MergedForwardBinding(Binding):
    """A binding that takes points in a LoRA layout and writes W0 + ΔW(point) into the base weights."""

    def __init__(self, model: torch.nn.Module, point: AdapterState):
        deltas = delta_state(point)
        inner = MergedSpace().bind(model, deltas)
        super().__init__(inner.model, inner.targets, deltas, inner.close, inner._offsets)

    @torch.no_grad()
    def apply(self, point: AdapterState) -> None:
        """Write W0 + s·B·A of every module into its (working) weight in one fused matmul-add, no ΔW temporary."""
        terms = lora_terms(point, "merged")
        if {t.module + ".weight" for t in terms} != self.targets.keys():
            raise ValueError("point does not match the bound layout (bind once per path)")
        for term in terms:
            w, w0 = self.targets[term.module + ".weight"], self._offsets[term.module + ".weight"]
            a, b = point.tensors[term.a_key].to(w.dtype), point.tensors[term.b_key].to(w.dtype)
            left, right = (a.T, b.T) if term.transposed else (b, a)
            if w0.dtype == w.dtype:
                torch.addmm(w0, left, right, alpha=module_scale(point, term), out=w)
            else:  # an fp32 working copy over a bf16/fp16 W0
                w.copy_(w0).addmm_(left, right, alpha=module_scale(point, term))


def can_merge(path: InterpolationPath) -> bool:
    """Whether the path's points can run as merged forwards (plain LoRA in factors or delta space)."""
    if path.space.name not in MERGEABLE_SPACES:
        return False
    try:
        for node in path.nodes:
            lora_terms(node, "merged")
    except MclError:  # DoRA or tensors beside A and B
        return False
    return True


def fits_working_copies(model: torch.nn.Module, point: AdapterState) -> bool:
    """Whether the fp32 working copies of a low-precision base fit in the free memory of its CUDA device.

    Off CUDA (or with nothing to copy) they are taken to fit; on CUDA a margin of 10 % is kept.
    """
    needed = working_copy_bytes(model, delta_state(point))
    device = next(model.parameters()).device
    if needed == 0 or device.type != "cuda":
        return True
    return needed < 0.9 * torch.cuda.mem_get_info(device)[0]


def forward_spec(path: InterpolationPath, merged: bool = True) -> dict[str, str]:
    """What a point's cache key records of its forward: {"forward": "merged"} for merged forwards, else nothing.

    Merged and unmerged losses agree to ~1e-8 relative, not bit for bit; keyed apart, a sweep reads back exactly
    what its own forward computes.
    """
    return {"forward": "merged"} if merged and can_merge(path) else {}


def bind_for_forward(path: InterpolationPath, model: torch.nn.Module, merged: bool = True) -> Binding:
    """Bind `model` for the path's points: merged forwards where exact, else the space's own binding.

    On a GPU without room for the fp32 working copies of a bf16/fp16 base, PEFT's LoRA layers are used
    instead (said on stderr), as with `merged=False`.
    """
    if merged and can_merge(path):
        start = path.point(0.0)
        if fits_working_copies(model, start):
            return MergedForwardBinding(model, start)
        print("merged forwards: no room on the GPU for fp32 copies of the adapted weights; using PEFT's LoRA "
              "layers (--no-merge)", file=sys.stderr)
    return path.bind(model)
