"""Checks of LoRA adapters: against their own config, against a base model, and against each other.

`check_structure` (run by `read_adapter` on every adapter) holds the tensors to what adapter_config.json
says: every LoRA module is one the config targets, has both factors, the config's rank and a floating
dtype. `check_fits` holds them to a base model: the weights adapt exactly the modules the config targets
in that model (none missing, none extra) with factors of its shapes (A: r × in, B: out × r).
`same_dtype` casts adapters of mixed precision to their common dtype before they are combined.

Two adapters: each check is one entry in CHECKS: (field name, function returning a mismatch description
or None). `factors` space needs identical LoRA settings and tensor shapes; `delta` tolerates different
ranks (only the shape of ΔW must agree); `merged` needs only the same base and ΔW shapes.
"""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Sequence

from mcl.adapters.io import AdapterState
from mcl.errors import MclError

if TYPE_CHECKING:  # checks on configs and shapes need no torch (mcl adapters check reads headers)
    import torch

PREFIX = "base_model.model."  # PEFT's prefix of saved keys
FACTOR_PARTS = {  # saved-key suffix -> part of a LoRA module
    ".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "A", ".lora_embedding_B": "B",
    ".lora_magnitude_vector": "magnitude",
}


def pattern_value(pattern: dict | None, module: str):
    """The value of the first `rank_pattern`/`alpha_pattern` key matching `module` (PEFT's rule), else None."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def module_rank(config: dict, module: str) -> int:
    """The rank the config gives one module: its `rank_pattern` entry, else `r`."""
    r = pattern_value(config.get("rank_pattern"), module)
    return config.get("r", 8) if r is None else r


def lora_modules(state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
    """LoRA tensors by module (name inside the base model) and part (A, B, magnitude); other tensors left out."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.tensors.items():
        for suffix, part in FACTOR_PARTS.items():
            if key.endswith(suffix):
                out.setdefault(key[: -len(suffix)].removeprefix(PREFIX), {})[part] = t
    return out


def _targets(config: dict, linear_names: Sequence[str] | None = None) -> SimpleNamespace | None:
    """The config's targeting fields as PEFT reads them (None when it names no targets); `all-linear` expands
    to `linear_names` when given, else matches every module."""
    targets = config.get("target_modules")
    if targets is None:
        return None
    if targets == "all-linear":
        targets = list(linear_names) if linear_names is not None else ".*"
    return SimpleNamespace(target_modules=targets, exclude_modules=config.get("exclude_modules"),
                           modules_to_save=config.get("modules_to_save"), target_parameters=None,
                           layers_to_transform=config.get("layers_to_transform"),
                           layers_pattern=config.get("layers_pattern"))


def _targeted(targets: SimpleNamespace | None, module: str) -> bool:
    if targets is None:
        return True
    names = targets.target_modules
    if (isinstance(names, (list, tuple, set)) and not targets.exclude_modules and not targets.modules_to_save
            and targets.layers_to_transform is None and not targets.layers_pattern):
        # a plain list of names (mcl's own adapters): PEFT's rule, without importing peft (and torch) to apply it
        return module in names or any(module.endswith(f".{name}") for name in names)
    from peft.tuners.tuners_utils import check_target_module_exists

    return bool(check_target_module_exists(targets, module))


def check_structure(state: AdapterState) -> None:
    """One-line MclError unless every LoRA module is one the config targets, with an A and a B of the config's
    rank, and every tensor is floating point (what PEFT would load, not silently drop or mis-scale)."""
    where = state.label
    for key, t in state.tensors.items():
        if not t.is_floating_point():
            raise MclError(f"{where}: tensor {key} has dtype {str(t.dtype).removeprefix('torch.')}; LoRA tensors "
                           "must be floating point (float32, float16 or bfloat16)")
    modules = lora_modules(state)
    targets = _targets(state.config)
    extra = sorted(m for m in modules if not _targeted(targets, m))
    if extra:
        raise MclError(f"{where}: the weights hold LoRA tensors for {extra[0]} ({len(extra)} of {len(modules)} "
                       f"modules), which adapter_config.json's target_modules {state.config.get('target_modules')!r} "
                       "does not name: the config and the weights disagree")
    for module, parts in sorted(modules.items()):
        if "A" not in parts or "B" not in parts:
            raise MclError(f"{where}: {module} has lora_{'B' if 'A' in parts else 'A'} missing (a LoRA module needs "
                           "both factors)")
        r = module_rank(state.config, module)
        if parts["A"].dim() < 2 or parts["B"].dim() < 2 or parts["A"].shape[0] != r or parts["B"].shape[1] != r:
            shapes = f"A {tuple(parts['A'].shape)} and B {tuple(parts['B'].shape)}"
            raise MclError(f"{where}: {module} has factors {shapes}, not of the rank {r} that adapter_config.json "
                           "gives it")


def _dims(layer: torch.nn.Module) -> tuple[int, int] | None:
    """(in, out) of a layer LoRA can adapt as a matrix (Linear, GPT-2's Conv1D, Embedding), else None."""
    import torch

    if isinstance(layer, torch.nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if hasattr(layer, "nf") and hasattr(layer, "nx"):  # transformers' Conv1D: weight is in × out
        return layer.nx, layer.nf
    if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
        return layer.in_features, layer.out_features
    return None


def check_fits(state: AdapterState, model: torch.nn.Module) -> None:
    """One-line MclError naming the first difference between the adapter and what its config targets in `model`:
    a targeted module without LoRA tensors, tensors for a module the model lacks or the config does not target,
    or a factor whose shape is not A: r × in, B: out × r (magnitude: out)."""
    from mcl.adapters.lora import linear_module_names

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = {name: getattr(m, "base_layer", m) for name, m in base.named_modules()
              if name and "lora_" not in name and not name.endswith("base_layer")}
    present = lora_modules(state)
    targets = _targets(state.config, linear_module_names(base))
    expected = {name for name, layer in layers.items() if _dims(layer) and _targeted(targets, name)
                and (targets is not None or name in present)}
    where = state.label
    extra = sorted(set(present) - expected)
    if extra:
        why = "the base model has no such module" if extra[0] not in layers else "the config does not target it there"
        raise MclError(f"{where}: the weights hold LoRA tensors for {extra[0]} ({len(extra)} module(s)); {why}")
    missing = sorted(expected - set(present))
    if missing:
        raise MclError(f"{where}: adapter_config.json targets {missing[0]} ({len(missing)} module(s) of the base "
                       "model) but the weights hold no LoRA tensors for it")
    for module, parts in sorted(present.items()):
        n_in, n_out = _dims(layers[module])
        r = parts["A"].shape[0]
        want = {"A": (r, n_in), "B": (n_out, r), "magnitude": (n_out,)}
        for part, t in sorted(parts.items()):
            if tuple(t.shape) != want[part]:
                raise MclError(f"{where}: {module} {part} is {tuple(t.shape)}; the base model's {module} "
                               f"({n_in} in, {n_out} out) needs {want[part]}")


def same_dtype(states: Sequence[AdapterState]) -> list[AdapterState]:
    """The states with every tensor cast to the dtype all their dtypes promote to (float16 with bfloat16 or
    float32 gives float32), so mixed-precision adapters can be combined; states already agreeing are returned as
    they are (no copy, gradients kept)."""
    dtypes = {t.dtype for s in states for t in s.tensors.values()}
    if len(dtypes) <= 1:
        return list(states)
    import torch

    common = next(iter(dtypes))
    for d in dtypes:
        common = torch.promote_types(common, d)
    return [replace(s, tensors={k: t.to(common) for k, t in s.tensors.items()}) for s in states]


def _norm_targets(cfg: dict) -> object:
    t = cfg.get("target_modules")
    return sorted(t) if isinstance(t, list) else t


def _modules(state: AdapterState) -> set[str]:
    return {k.split(".lora_")[0] for k in state.tensors}


def _delta_shapes(state: AdapterState) -> dict[str, tuple[int, int]]:
    out = {}
    for k, t in state.tensors.items():
        mod = k.split(".lora_")[0]
        if ".lora_A." in k or k.endswith(".lora_A.weight"):
            out.setdefault(mod, [None, None])[1] = t.shape[1]
        elif ".lora_B." in k or k.endswith(".lora_B.weight"):
            out.setdefault(mod, [None, None])[0] = t.shape[0]
    return {m: tuple(v) for m, v in out.items()}


def _cfg_field(name: str) -> Callable[[AdapterState, AdapterState], str | None]:
    def check(a: AdapterState, b: AdapterState) -> str | None:
        va, vb = a.config.get(name), b.config.get(name)
        if name == "target_modules":
            va, vb = _norm_targets(a.config), _norm_targets(b.config)
        if va in ({}, None) and vb in ({}, None):
            return None
        return None if va == vb else f"{va!r} vs {vb!r}"

    return check


def _base(a: AdapterState, b: AdapterState) -> str | None:
    from mcl.models import model_identity

    if a.base_model and b.base_model and model_identity(a.base_model) != model_identity(b.base_model):
        return (f"{a.base_model!r} vs {b.base_model!r} (different models; if they are the same model, "
                "pass --base MODEL to evaluate both on it)")
    ra, rb = a.config.get("revision"), b.config.get("revision")
    return f"revision {ra!r} vs {rb!r}" if ra and rb and ra != rb else None


def _modules_check(a: AdapterState, b: AdapterState) -> str | None:
    ma, mb = _modules(a), _modules(b)
    if ma == mb:
        return None
    diff = sorted(ma ^ mb)
    return f"{len(diff)} module(s) in only one adapter, e.g. {diff[0]}"


def _shapes(a: AdapterState, b: AdapterState) -> str | None:
    for k, t in a.tensors.items():
        if k in b.tensors and t.shape != b.tensors[k].shape:
            return f"{k}: {tuple(t.shape)} vs {tuple(b.tensors[k].shape)}"
    return None


def _delta_shape(a: AdapterState, b: AdapterState) -> str | None:
    da, db = _delta_shapes(a), _delta_shapes(b)
    for m, s in da.items():
        if m in db and s != db[m]:
            return f"{m}: ΔW {s} vs {db[m]}"
    return None


BASE_CHECKS = [("base_model", _base), ("target_modules", _cfg_field("target_modules")), ("modules", _modules_check)]
FACTOR_CHECKS = [
    ("r", _cfg_field("r")),
    ("lora_alpha", _cfg_field("lora_alpha")),
    ("use_rslora", _cfg_field("use_rslora")),
    ("use_dora", _cfg_field("use_dora")),
    ("rank_pattern", _cfg_field("rank_pattern")),
    ("alpha_pattern", _cfg_field("alpha_pattern")),
    ("shapes", _shapes),
]
DELTA_CHECKS = [("use_dora", _cfg_field("use_dora")), ("delta_shapes", _delta_shape)]
CHECKS: dict[str, list] = {
    "factors": BASE_CHECKS + FACTOR_CHECKS,
    "delta": BASE_CHECKS + DELTA_CHECKS,
    "merged": BASE_CHECKS + [("delta_shapes", _delta_shape)],
}


LORA_FACTOR = re.compile(r"\.lora_(A|B)\.weight$|\.lora_magnitude_vector$")


def check_plain_lora(state: AdapterState) -> None:
    """MclError when an adapter holds tensors other than LoRA A/B factors (and DoRA magnitudes) of linear layers.

    PEFT also saves LoRA on embeddings (`lora_embedding_A/B`, plus `embed_tokens.base_layer.weight`) and
    full copies of `modules_to_save`; mcl's paths interpolate only linear-layer LoRA factors.
    """
    other = sorted(k for k in state.tensors if not LORA_FACTOR.search(k))
    if state.config.get("modules_to_save") or any("modules_to_save" in k for k in other):
        raise MclError(f"{state.label}: adapter has modules_to_save {state.config.get('modules_to_save')} (full trained "
                       "copies of layers); mcl interpolates LoRA factors of linear layers only")
    if other:
        kind = "LoRA on an embedding layer" if any("lora_embedding" in k or "embed" in k for k in other) else "non-LoRA tensors"
        raise MclError(f"{state.label}: adapter holds {kind} ({len(other)} tensor(s), e.g. {other[0]}); mcl "
                       "interpolates LoRA factors of linear layers only: retrain without those targets")


def check_compatible(a: AdapterState, b: AdapterState, space: str = "factors") -> None:
    """Raise a one-line MclError naming the first field in which `a` and `b` are incompatible."""
    if space not in CHECKS:
        raise MclError(f"unknown interpolation space {space!r}; choose from {', '.join(CHECKS)}")
    check_plain_lora(a)
    check_plain_lora(b)
    for name, check in CHECKS[space]:
        problem = check(a, b)
        if problem:
            raise MclError(f"incompatible adapters ({space} space): {name} differs: {problem} [{a.label} vs {b.label}]")
