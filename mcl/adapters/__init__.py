"""LoRA state: wrap a base model, load/save PEFT dirs, compatibility checks, in-place apply."""

from mcl.adapters.compat import check_compatible
from mcl.adapters.io import AdapterState, read_adapter, save_adapter, scaling, write_adapter_dir
from mcl.adapters.lora import (ALL_LINEAR, LoraSpec, add_lora, check_targets, get_state, linear_module_names,
                               lora_parameters, set_state)

__all__ = [
    "ALL_LINEAR", "AdapterState", "LoraSpec", "add_lora", "check_compatible", "check_targets", "get_state",
    "linear_module_names",
    "lora_parameters", "read_adapter", "save_adapter", "scaling", "set_state", "write_adapter_dir",
]
