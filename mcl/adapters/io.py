"""Reading and writing PEFT adapter dirs (adapter_config.json + adapter_model.safetensors).

Any LoRA dir written by plain peft is valid input; mcl adds an optional sidecar `mcl.json`
(task, step, method, base model id, sha256 of the weights file) that is never required for reading.
Only safetensors are read: no pickle loads. `read_adapter` is the one way every command reads an
adapter: the tensors must be what the config describes (`mcl.adapters.compat.check_structure`), the
sidecar's sha256 must be the weights' own, and given the base model, the tensors must fit it
(`check_fits`).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcl.errors import MclError
from mcl.io import atomic_path, is_main_process, sha256_file, write_json_atomic

if TYPE_CHECKING:  # torch loads only when tensor values are read
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SIDECAR = "mcl.json"


@dataclass
class AdapterState:
    """One LoRA adapter: its PEFT config, its tensors (saved-state keys) and optional mcl sidecar."""

    config: dict[str, Any]
    tensors: dict[str, "torch.Tensor | TensorInfo"]
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        """Base model id: the sidecar's when present, else the PEFT config's."""
        return self.meta.get("base_model") or self.config.get("base_model_name_or_path")

    @property
    def label(self) -> str:
        """Short human name (the dir path or 'adapter')."""
        return self.path or "adapter"


FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}  # safetensors dtype → numpy (bf16: raw bits)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's dtype and shape as a safetensors header states them (no values read); answers what the
    structure checks ask of a tensor."""

    dtype: str
    shape: tuple[int, ...]

    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    def dim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def is_floating_point(self) -> bool:
        """Whether the dtype is a float type."""
        return self.dtype in FLOAT_DTYPES


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a UTF-8 file; a one-line MclError when it is unreadable, malformed or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise MclError(f"{path}: {what} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise MclError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise MclError(f"{path}: {what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_config(config: dict[str, Any], where: Path) -> None:
    """Types of the LoRA config fields mcl reads (r, lora_alpha, target_modules, patterns, base model)."""
    r = config.get("r", 8)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise MclError(f"{where}: r must be a positive integer, got {r!r}")
    alpha = config.get("lora_alpha", r)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise MclError(f"{where}: lora_alpha must be a number, got {alpha!r}")
    targets = config.get("target_modules")
    if targets is not None and not isinstance(targets, str) and not (
            isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise MclError(f"{where}: target_modules must be a string or a list of strings, got {targets!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise MclError(f"{where}: {key} must be a mapping, got {type(config[key]).__name__}")
    for key in ("base_model_name_or_path", "revision"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise MclError(f"{where}: {key} must be a string, got {config[key]!r}")


def _check_sidecar(meta: dict[str, Any], where: Path) -> None:
    """The sidecar fields mcl reads are strings when present."""
    for key in ("base_model", "task", "learner", "method", "sha256"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise MclError(f"{where}: {key} must be a string, got {meta[key]!r} (the sidecar is optional: "
                           "fix or delete it)")


def _adapter_files(path: str | Path) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    """(dir, checked config, weights file, checked sidecar) of a PEFT LoRA dir; every failure a one-line MclError."""
    path = Path(path)
    if not path.exists():
        raise MclError(f"adapter dir {path} does not exist")
    if not path.is_dir():
        raise MclError(f"{path} is not a directory (expected a PEFT adapter dir)")
    cfg_file = path / CONFIG
    if (path / "l2p.json").is_file():
        raise MclError(f"{path} is an L2P prompt pool (method l2p), not a LoRA adapter: the path analysis reads "
                       "LoRA checkpoints only")
    if not cfg_file.is_file():
        inner = sorted(d for d in path.iterdir() if (d / CONFIG).is_file())  # e.g. I-LoRA's slow/ and fast/
        hint = f"; it holds adapters: pass {' or '.join(str(d) for d in inner)}" if inner else ""
        raise MclError(f"{path} has no {CONFIG}: not a PEFT adapter dir{hint}")
    config = read_json_object(cfg_file, "the adapter config")
    if config.get("peft_type", "LORA") != "LORA":
        made = " (a prompt method's checkpoint, e.g. pp)" if config.get("peft_type") == "PROMPT_TUNING" else ""
        raise MclError(f"{cfg_file}: peft_type is {config.get('peft_type')!r}{made}; the path analysis reads LoRA "
                       "adapters only")
    _check_config(config, cfg_file)
    weights = path / WEIGHTS
    if not weights.is_file():
        hint = " (adapter_model.bin is a pickle; mcl reads safetensors only)" if (path / "adapter_model.bin").exists() else ""
        raise MclError(f"{path} has no {WEIGHTS}{hint}")
    meta = {}
    if (path / SIDECAR).is_file():
        meta = read_json_object(path / SIDECAR, "the mcl sidecar")
        _check_sidecar(meta, path / SIDECAR)
    return path, config, weights, meta


def _checked(state: AdapterState, weights: Path) -> AdapterState:
    """The structure and sidecar-hash checks every read makes (values or header alike)."""
    from mcl.adapters.compat import check_structure

    check_structure(state)
    if state.meta.get("sha256") and state.meta["sha256"] != sha256_file(weights):
        raise MclError(f"{weights}: not the weights {Path(state.path) / SIDECAR} records (sha256 differs): the weights "
                       "were replaced or the sidecar is another adapter's; restore them, or delete mcl.json to read "
                       "the weights as a plain PEFT adapter")
    return state


def read_adapter(path: str | Path, check_finite: bool = True, base: "torch.nn.Module | None" = None) -> AdapterState:
    """Load a PEFT LoRA dir into an AdapterState, checked against its config (and `base` when given).

    Every failure is a one-line MclError: malformed files, NaN/Inf, tensors the config does not describe,
    weights that are not the ones mcl.json records, and (with `base`) modules or shapes that do not fit it.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mcl.adapters.compat import check_fits

    path, config, weights, meta = _adapter_files(path)
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise MclError(f"{weights}: corrupt safetensors file ({str(e).splitlines()[0]})") from None
    if not tensors:
        raise MclError(f"{weights}: contains no tensors")
    if check_finite:
        for k, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise MclError(f"{weights}: tensor {k} contains NaN or Inf")
    state = _checked(AdapterState(config=config, tensors=tensors, path=str(path), meta=meta), weights)
    if base is not None:
        check_fits(state, base)
    return state


def _finite(raw: bytes, dtype: str) -> bool:
    """Whether a float tensor's raw little-endian bytes hold no NaN or Inf (bf16: exponent bits not all ones)."""
    import numpy as np

    values = np.frombuffer(raw, dtype=FLOAT_DTYPES[dtype])
    if dtype == "BF16":
        return not bool(((values & 0x7F80) == 0x7F80).any())
    return bool(np.isfinite(values).all())


def read_adapter_header(path: str | Path, check_finite: bool = True) -> AdapterState:
    """An adapter as `read_adapter` checks it (config, structure, sidecar hash, finite values), but with tensor
    dtypes and shapes (`TensorInfo`) from the safetensors header in place of tensors: no torch.

    Enough for `mcl adapters info/check` (sizes, compatibility); values are read only to check they are finite.
    """
    path, config, weights, meta = _adapter_files(path)
    size = weights.stat().st_size
    with weights.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        try:
            header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict):
            raise MclError(f"{weights}: corrupt safetensors file (unreadable header)")
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        try:
            tensors = {k: TensorInfo(v["dtype"], tuple(int(d) for d in v["shape"])) for k, v in entries.items()}
            spans = {k: (8 + n + int(v["data_offsets"][0]), 8 + n + int(v["data_offsets"][1])) for k, v in entries.items()}
        except (KeyError, TypeError, ValueError, IndexError):
            raise MclError(f"{weights}: corrupt safetensors file (malformed tensor entry)") from None
        if not tensors:
            raise MclError(f"{weights}: contains no tensors")
        for k, (start, end) in spans.items():
            if not 8 + n <= start <= end <= size:
                raise MclError(f"{weights}: corrupt safetensors file (tensor {k} lies outside the file)")
            if check_finite and tensors[k].dtype in FLOAT_DTYPES:
                f.seek(start)
                if not _finite(f.read(end - start), tensors[k].dtype):
                    raise MclError(f"{weights}: tensor {k} contains NaN or Inf")
    return _checked(AdapterState(config=config, tensors=tensors, path=str(path), meta=meta), weights)


def save_adapter(model, out_dir: str | Path, adapter_name: str = "default", meta: dict[str, Any] | None = None) -> Path:
    """Save one adapter of a PeftModel as a plain PEFT dir (atomically), plus the mcl.json sidecar.

    Under torch.distributed every process calls it (a sharded adapter is gathered, a collective) and the
    main process writes.
    """
    from mcl.adapters.lora import full_tensor, is_sharded
    from mcl.models import base_model_id

    out_dir = Path(out_dir)
    live = {n: p for n, p in model.named_parameters() if "lora_" in n}
    whole = {}  # sharded (FSDP): every process gathers the LoRA tensors, PEFT saves them from that state dict
    if any(map(is_sharded, live.values())):
        whole = {"state_dict": {n: full_tensor(p.detach()) for n, p in live.items()}}
    if not is_main_process():
        return out_dir
    with atomic_path(out_dir) as tmp:
        # LoRA of linear layers only (check_plain_lora): no embedding-layer probe of the base on the hub
        model.save_pretrained(tmp, selected_adapters=[adapter_name], save_embedding_layers=False, **whole)
        nested = tmp / adapter_name  # peft nests non-default adapters in a sub-folder
        if adapter_name != "default" and nested.is_dir():
            for f in nested.iterdir():
                shutil.move(str(f), tmp / f.name)
            nested.rmdir()
        base = base_model_id(model.get_base_model())
        sidecar = {**({"base_model": base} if base else {}), **(meta or {})}
        sidecar["sha256"] = sha256_file(tmp / WEIGHTS)
        write_json_atomic(tmp / SIDECAR, sidecar)
    return out_dir


def scaling(config: dict[str, Any], r: int | None = None) -> float:
    """LoRA scale s in ΔW = s·B·A for a config (rsLoRA aware)."""
    r = r or config["r"]
    alpha = config.get("lora_alpha", r)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def write_adapter_dir(state: AdapterState, out_dir: str | Path) -> Path:
    """Write an AdapterState as a PEFT dir (config + safetensors) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_json_atomic(tmp / CONFIG, state.config)
        save_file({k: v.contiguous() for k, v in state.tensors.items()}, tmp / WEIGHTS, metadata={"format": "pt"})
        if state.meta:
            write_json_atomic(tmp / SIDECAR, {**state.meta, "sha256": sha256_file(tmp / WEIGHTS)})
    return out_dir
