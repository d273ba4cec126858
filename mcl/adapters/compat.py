"""Compatibility of two LoRA adapters before they are interpolated or compared.

Each check is one entry in CHECKS: (field name, function returning a mismatch description or None).
`factors` space needs identical LoRA settings and tensor shapes; `delta` tolerates different ranks
(only the shape of ΔW must agree); `merged` needs only the same base and ΔW shapes.
"""

from __future__ import annotations

import re
from typing import Callable

from mcl.adapters.io import AdapterState
from mcl.errors import MclError


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
