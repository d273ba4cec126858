"""Device and precision names shared by the CLI and the Python API: `resolve_device`, `resolve_dtype`.

`resolve_device(None)` is cuda when a GPU is visible, else cpu; asking for a device this machine does
not have is a one-line MclError. Precisions are named fp32 | bf16 | fp16 (torch names also accepted).
"""

from __future__ import annotations

import torch

from mcl.errors import MclError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def default_device() -> str:
    """cuda when a CUDA GPU is available, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """A torch.device for `name` (None: the default); a missing GPU or a bad name is a one-line error."""
    if name is None or name == "auto":
        name = default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MclError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MclError(f"--device {name}: no CUDA GPU is available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MclError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise MclError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise MclError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str | torch.dtype | None = None) -> torch.dtype:
    """A torch dtype for fp32 | bf16 | fp16 (or a torch dtype / its name); None means fp32."""
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise MclError(f"unsupported dtype {name}: use fp32, bf16 or fp16")
        return name
    key = _ALIASES.get(str(name).removeprefix("torch."), str(name))
    if key not in DTYPES:
        raise MclError(f"unknown dtype {name!r}: use fp32, bf16 or fp16")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name (fp32, bf16, fp16) of a supported dtype."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (where its inputs must go)."""
    return next(model.parameters()).device


def device_memory_bytes(device: torch.device) -> int:
    """All the memory of a device: a GPU's total memory, else the host's physical RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
