"""Interpolation spaces (a registry): how path nodes combine into a point, and how a point reaches a live model.

Every path point is a weighted sum Σ wᵢ·nodeᵢ (weights summing to 1); a space decides what is summed:
- `factors`: the LoRA tensors A, B element-wise (bilinear in ΔW); the live model carries one adapter of
  the nodes' own configuration.
- `delta`: ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ exactly, realised by rank concatenation (A = [A₀; A₁; …],
  B = [w₀s₀B₀, w₁s₁B₁, …]) in one live adapter of rank Σ rᵢ with scale 1; works for different ranks.
- `merged`: W0 + ΔW(t) written into the base weights (W0 kept and restored; computed in fp32 on bf16/fp16
  bases); the reference space.
`bind(model, point)` returns a Binding whose `apply(point)` copies a point into the live tensors in place.
`lerp_states_(dst, src, t)` moves live factor tensors to the factor-space point t of the line dst→src in
one fused multi-tensor op — the same formula (torch.lerp) as `Linear(dst, src).point(t)` in factor space.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, ClassVar, Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from mcl.adapters import AdapterState, check_compatible, lora_parameters
from mcl.adapters.compat import check_plain_lora
from mcl.errors import MclError
from mcl.paths.lora_math import delta_weight, lora_terms, module_scale


class Binding:
    """A live model bound to one space; `apply(point)` writes a point into its tensors in place."""

    def __init__(self, model: torch.nn.Module, targets: dict[str, torch.Tensor], template: AdapterState,
                 restore: Callable[[], None], offsets: dict[str, torch.Tensor] | None = None):
        for key, p in targets.items():
            if tuple(p.shape) != tuple(template.tensors[key].shape):
                raise MclError(f"adapter does not fit the base model: {key} is {tuple(template.tensors[key].shape)}, "
                               f"the model's tensor is {tuple(p.shape)}")
        self.model, self.targets, self._restore, self._offsets = model, targets, restore, offsets or {}

    @torch.no_grad()
    def apply(self, point: AdapterState) -> None:
        """Copy a point's tensors into the live model (plus W0 in merged space)."""
        if point.tensors.keys() != self.targets.keys():
            raise ValueError("point does not match the bound layout (bind once per path)")
        for key, p in self.targets.items():
            p.copy_(point.tensors[key])
            if key in self._offsets:
                p.add_(self._offsets[key])

    def close(self) -> None:
        """Undo the binding: remove the live adapter or restore W0."""
        self._restore()

    def __enter__(self) -> "Binding":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Space:
    """An interpolation space: combine nodes with weights, bind a model, measure inner products."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_plain_lora: ClassVar[bool] = False

    def validate(self, nodes: Sequence[AdapterState]) -> None:
        """Raise a one-line MclError when the nodes cannot share a path in this space."""
        for node in nodes:
            check_plain_lora(node)
        for node in nodes[1:]:
            check_compatible(nodes[0], node, self.name)
        if self.needs_plain_lora:
            for node in nodes:
                lora_terms(node, self.name)

    def combine(self, nodes: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
        """The point Σ wᵢ·nodeᵢ as a state in this space's layout (differentiable in the node tensors)."""
        raise NotImplementedError

    def node_on_line(self, a: AdapterState, b: AdapterState, s: float) -> AdapterState:
        """An adapter (usable as a path node) at (1−s)·a + s·b in this space."""
        return self.combine([a, b], [1.0 - s, s])

    def lerp(self, a: AdapterState, b: AdapterState, t: float) -> AdapterState:
        """The point (1−t)·a + t·b of the straight line a→b (exactly a at t=0 and b at t=1)."""
        return self.combine([a, b], [1.0 - t, t])

    def bind(self, model: torch.nn.Module, point: AdapterState) -> Binding:
        """Prepare `model` so that points laid out like `point` can be applied in place."""
        raise NotImplementedError

    def inner(self, x: AdapterState, y: AdapterState) -> float:
        """Inner product of two nodes in this space (used for plane coordinates)."""
        raise NotImplementedError


SPACES: dict[str, type[Space]] = {}


def _base_meta(nodes: Sequence[AdapterState]) -> dict[str, Any]:
    """The sidecar fields a combined point inherits: the nodes' base model id (they share it, validated)."""
    return {"base_model": nodes[0].base_model} if nodes[0].base_model else {}


def register_space(cls: type[Space]) -> type[Space]:
    """Class decorator adding a space to SPACES under its name."""
    SPACES[cls.name] = cls
    return cls


def get_space(space: str | Space) -> Space:
    """A Space instance by name (or the instance itself); unknown names are a one-line error."""
    if isinstance(space, Space):
        return space
    if space not in SPACES:
        raise MclError(f"unknown interpolation space {space!r}; choose from {', '.join(SPACES)}")
    return SPACES[space]()


def _lora_binding(model: torch.nn.Module, point: AdapterState, adapter_name: str) -> Binding:
    config = LoraConfig.from_peft_type(**{**point.config, "inference_mode": False})
    if isinstance(model, PeftModel):
        previous = model.active_adapter
        if adapter_name in model.peft_config:
            model.delete_adapter(adapter_name)
        model.add_adapter(adapter_name, config)
        model.set_adapter(adapter_name)
        live = model

        def restore() -> None:
            model.set_adapter(previous)
            model.delete_adapter(adapter_name)
    else:
        live = get_peft_model(model, config, adapter_name=adapter_name)

        def restore() -> None:
            live.unload()
    try:
        targets = lora_parameters(live, adapter_name)
        if targets.keys() != point.tensors.keys():
            missing = sorted(set(targets) ^ set(point.tensors))[0]
            raise MclError(f"adapter does not fit the base model: {missing} exists on one side only")
        return Binding(live, targets, point, restore)
    except Exception:
        restore()
        raise


@register_space
class FactorSpace(Space):
    """Element-wise interpolation of the LoRA factors A and B (what EMA-style methods do)."""

    name = "factors"
    summary = "A and B interpolated element-wise; bilinear in ΔW (EMA, thunlp Mode-Connectivity-PLM)"

    def combine(self, nodes: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
        """Σ wᵢ·tensorsᵢ key by key (zero weights skipped)."""
        used = [(w, n) for w, n in zip(weights, nodes) if w != 0]
        tensors = {k: sum(w * n.tensors[k] for w, n in used) for k in nodes[0].tensors}
        return AdapterState(dict(nodes[0].config), tensors, meta=_base_meta(nodes))

    def lerp(self, a: AdapterState, b: AdapterState, t: float) -> AdapterState:
        """torch.lerp key by key: a + t·(b − a), exact at both ends (the formula of `lerp_states_`)."""
        tensors = {k: torch.lerp(a.tensors[k], b.tensors[k], t) for k in a.tensors}
        return AdapterState(dict(a.config), tensors, meta=_base_meta([a, b]))

    def bind(self, model: torch.nn.Module, point: AdapterState) -> Binding:
        """A live adapter with the nodes' configuration."""
        return _lora_binding(model, point, "mcl_factors")

    def inner(self, x: AdapterState, y: AdapterState) -> float:
        """Σ over tensors of ⟨x, y⟩."""
        return float(sum((x.tensors[k].double() * y.tensors[k].double()).sum() for k in x.tensors))


@torch.no_grad()
def lerp_states_(dst: Sequence[torch.Tensor], src: Sequence[torch.Tensor], t: float) -> None:
    """In place, for every pair: dst ← dst + t·(src − dst), one fused multi-tensor op (factor-space Linear point t)."""
    torch._foreach_lerp_(list(dst), list(src), float(t))


def _delta_inner(x: AdapterState, y: AdapterState, space: str) -> float:
    """Σ over modules of ⟨ΔW_x, ΔW_y⟩_F without forming ΔW: s_x·s_y·Σ (B_xᵀB_y) ⊙ (A_x A_yᵀ)."""
    total = 0.0
    for tx, ty in zip(lora_terms(x, space), lora_terms(y, space)):
        bb = x.tensors[tx.b_key].double().T @ y.tensors[ty.b_key].double()
        aa = x.tensors[tx.a_key].double() @ y.tensors[ty.a_key].double().T
        total += module_scale(x, tx) * module_scale(y, ty) * float((bb * aa).sum())
    return total


@register_space
class DeltaSpace(Space):
    """Exact interpolation of ΔW by rank concatenation into one live adapter of scale 1."""

    name = "delta"
    needs_plain_lora = True
    summary = "ΔW(t) = Σ wᵢΔWᵢ exactly, by rank concatenation (ranks may differ)"

    def combine(self, nodes: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
        """A = [A₀; A₁; …], B = [w₀s₀B₀, w₁s₁B₁, …] per module; config rank Σrᵢ, α = rank (scale 1)."""
        node_terms = [lora_terms(n, self.name) for n in nodes]
        tensors, ranks = {}, {}
        for i, term in enumerate(node_terms[0]):
            parts = [(n, terms[i]) for n, terms in zip(nodes, node_terms)]
            tensors[term.a_key] = torch.cat([n.tensors[t.a_key] for n, t in parts], dim=0)
            tensors[term.b_key] = torch.cat(
                [(w * module_scale(n, t)) * n.tensors[t.b_key] for w, (n, t) in zip(weights, parts)], dim=1)
            ranks[term.relative_module] = tensors[term.a_key].shape[0]
        return AdapterState(_rank_config(nodes[0].config, ranks), tensors, meta=_base_meta(nodes))

    def bind(self, model: torch.nn.Module, point: AdapterState) -> Binding:
        """A live adapter of the concatenated rank with scale 1."""
        return _lora_binding(model, point, "mcl_delta")

    def inner(self, x: AdapterState, y: AdapterState) -> float:
        """Σ over modules of ⟨ΔW_x, ΔW_y⟩ (Frobenius)."""
        return _delta_inner(x, y, self.name)


def _rank_config(config: dict, ranks: dict[str, int]) -> dict:
    """A LoRA config giving each module its rank and α = rank (scale 1), plain α/r scaling."""
    r = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {re.escape(m): rank for m, rank in ranks.items() if rank != r}
    return {**config, "r": r, "lora_alpha": r, "use_rslora": False, "rank_pattern": pattern,
            "alpha_pattern": dict(pattern)}


def _base_module(model: torch.nn.Module, module: str) -> torch.nn.Module:
    name = module if isinstance(model, PeftModel) else module.removeprefix("base_model.model.")
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise MclError(f"adapter does not fit the base model: it has no module {name}") from None
    return getattr(mod, "base_layer", mod)


def _shared_weights(model: torch.nn.Module) -> set[int]:
    """Storage addresses of parameters that several modules use (tied weights)."""
    seen = Counter(p.data_ptr() for _, p in model.named_parameters(remove_duplicate=False))
    return {ptr for ptr, n in seen.items() if n > 1}


def _needs_working_copy(weight: torch.Tensor, shared: set[int]) -> bool:
    """Whether MergedSpace.bind gives this weight an fp32 working copy (low precision or tied) over writing it."""
    return weight.dtype not in (torch.float32, torch.float64) or weight.data_ptr() in shared


def working_copy_bytes(model: torch.nn.Module, point: AdapterState) -> int:
    """Bytes of the fp32 working copies `MergedSpace().bind(model, point)` would allocate (0 on fp32 bases)."""
    shared = _shared_weights(model)
    weights = [_base_module(model, key.removesuffix(".weight")).weight for key in point.tensors]
    return sum(4 * w.numel() for w in weights if _needs_working_copy(w, shared))


def _fp32_working_copy(mod: torch.nn.Module) -> tuple[torch.nn.Parameter, Callable[[], None]]:
    """Give `mod` fp32 copies of its weight (and bias) and run it in fp32; returns the copy and the undo.

    Floating inputs are cast to fp32 and the output back to the module's dtype, so W0 + ΔW keeps ΔW's bits
    on a bf16/fp16 base; the original parameters are put back untouched (the same objects) on undo.
    """
    dtype = mod.weight.dtype
    original = {n: getattr(mod, n) for n in ("weight", "bias") if getattr(mod, n, None) is not None}
    for n, p in original.items():
        setattr(mod, n, torch.nn.Parameter(p.detach().to(torch.float32, copy=True), requires_grad=False))
    hooks = [mod.register_forward_pre_hook(
                 lambda m, args: tuple(a.float() if torch.is_floating_point(a) else a for a in args)),
             mod.register_forward_hook(lambda m, args, out: out.to(dtype))]

    def undo() -> None:
        for h in hooks:
            h.remove()
        for n, p in original.items():
            setattr(mod, n, p)

    return mod.weight, undo


@register_space
class MergedSpace(Space):
    """Full weights W0 + ΔW(t) written into the base model (the reference space)."""

    name = "merged"
    needs_plain_lora = True
    summary = "W0 + ΔW(t) written into the base weights (reference; no LoRA layers involved)"

    def combine(self, nodes: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
        """ΔW(t) per module, keyed `<module>.weight`."""
        node_terms = [lora_terms(n, self.name) for n in nodes]
        tensors = {}
        for i, term in enumerate(node_terms[0]):
            parts = [(w, n, terms[i]) for w, n, terms in zip(weights, nodes, node_terms) if w != 0]
            tensors[term.module + ".weight"] = sum(w * delta_weight(n, t) for w, n, t in parts)
        return AdapterState(dict(nodes[0].config), tensors, meta={**_base_meta(nodes), "space": self.name})

    def node_on_line(self, a: AdapterState, b: AdapterState, s: float) -> AdapterState:
        """The rank-concatenated adapter of ΔW = (1−s)·ΔW_a + s·ΔW_b (points here are not adapters)."""
        return DeltaSpace().combine([a, b], [1.0 - s, s])

    def bind(self, model: torch.nn.Module, point: AdapterState) -> Binding:
        """Base weights as targets, W0 kept as offsets; LoRA layers of a PeftModel disabled meanwhile.

        fp32/fp64 weights are written in place (W0 copied back on close); bf16/fp16 and tied weights get an
        fp32 working copy each (`_fp32_working_copy`), so ΔW is never rounded away and W0 is never touched.
        """
        shared = _shared_weights(model)
        targets, offsets, undo = {}, {}, []
        for key in point.tensors:
            mod = _base_module(model, key.removesuffix(".weight"))
            w = mod.weight
            if _needs_working_copy(w, shared):
                targets[key], restore_module = _fp32_working_copy(mod)
                offsets[key] = w
                undo.append(restore_module)
            else:
                targets[key], offsets[key] = w, w.detach().clone()
                undo.append(lambda w=w, w0=offsets[key]: w.data.copy_(w0))
        is_peft = isinstance(model, PeftModel)

        @torch.no_grad()
        def restore() -> None:
            for step in undo:
                step()
            if is_peft:
                model.base_model.enable_adapter_layers()

        try:
            binding = Binding(model, targets, point, restore, offsets=offsets)
        except MclError:
            restore()
            raise
        if is_peft:
            model.base_model.disable_adapter_layers()
        return binding

    def inner(self, x: AdapterState, y: AdapterState) -> float:
        """Σ over modules of ⟨ΔW_x, ΔW_y⟩ (Frobenius)."""
        return _delta_inner(x, y, self.name)
