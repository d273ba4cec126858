"""LoRA state: wrap a base model, load/save PEFT dirs, compatibility checks, in-place apply.

Names load on first use (PEP 562), so `LoraSpec` and reading an adapter's config need neither peft nor
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ALL_LINEAR": "spec", "LoraSpec": "spec",
    "check_compatible": "compat",
    "AdapterState": "io", "read_adapter": "io", "save_adapter": "io", "scaling": "io", "write_adapter_dir": "io",
    "add_lora": "lora", "check_targets": "lora", "get_state": "lora", "linear_module_names": "lora",
    "lora_parameters": "lora", "set_state": "lora",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.adapters' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mcl.adapters.{_EXPORTS[name]}"), name)
