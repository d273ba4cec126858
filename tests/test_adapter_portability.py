"""Adapters travel: they name their base by its public name (never mcl's cache path), so plain PEFT loads them on a
machine whose cache lies elsewhere."""

import json
import shutil
import warnings

import torch
from peft import PeftModel

from mcl.adapters import LoraSpec, add_lora, read_adapter, save_adapter
from mcl.models import load_base, public_name


def test_an_adapter_loads_in_plain_peft_after_the_cache_moved(tmp_path, monkeypatch):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache-one"))
    base, _ = load_base("tiny")
    peft = add_lora(base, LoraSpec(r=4, target_modules=["q_proj", "v_proj"]), seed=0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = peft(input_ids=ids).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PEFT warning about the base's path or the hub
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)  # peft vs transformers 5
        out = save_adapter(peft, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny" and read_adapter(out).base_model == "tiny"
    for f in out.iterdir():
        if f.suffix in (".json", ".md"):
            assert "cache-one" not in f.read_text(), f.name
    assert "base_model: tiny" in (out / "README.md").read_text()

    shutil.rmtree(tmp_path / "cache-one")
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache-two"))
    moved, _ = load_base(config["base_model_name_or_path"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        loaded = PeftModel.from_pretrained(moved, out)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, expected)


def test_public_name_of_a_named_models_cache_dir_is_its_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path))
    base, _ = load_base("tiny")
    assert public_name(tmp_path / "models" / "tiny") == "tiny" == base.name_or_path == base.config.mcl_base
    assert public_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert public_name(tmp_path / "models") == str(tmp_path / "models")  # a user's own dir stays as given
