"""Adapters held to their config and to a base model, mixed precision, resume states, and the self-verifying cache."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from mcl.adapters import AdapterState, get_state, read_adapter, set_state
from mcl.adapters.compat import check_fits, check_structure, same_dtype
from mcl.analysis.cache import PointCache
from mcl.errors import MclError
from mcl.paths import Linear


def saved(tmp_path, model, name="ad", **lora):
    peft = get_peft_model(model, LoraConfig(**{"r": 4, "lora_alpha": 8, **lora}))
    peft.save_pretrained(tmp_path / name)
    return peft, tmp_path / name


def test_every_peft_targeting_form_fits_its_base(tiny_llama, make_tiny_llama, tmp_path):
    """all-linear, a regex, a rank pattern and layers_to_transform: what PEFT adapts is exactly what is expected."""
    forms = [{"target_modules": "all-linear"}, {"target_modules": r".*\.(q|v)_proj"},
             {"target_modules": ["q_proj", "down_proj"], "rank_pattern": {"down_proj": 2}},
             {"target_modules": ["k_proj"], "layers_to_transform": [1]}]
    for i, lora in enumerate(forms):
        _, d = saved(tmp_path, make_tiny_llama(), f"ad{i}", **lora)
        check_fits(read_adapter(d), tiny_llama)
    state = read_adapter(tmp_path / "ad3")
    assert {k.split(".lora_")[0] for k in state.tensors} == {"base_model.model.model.layers.1.self_attn.k_proj"}


def test_gpt2_conv1d_targets_fit_with_their_transposed_weights(tmp_path):
    """GPT-2's Conv1D stores its weight in × out; A must be r × in (768/32 here), B out × r."""
    def gpt2():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32))

    _, d = saved(tmp_path, gpt2(), target_modules=["c_attn"], fan_in_fan_out=True)
    state = read_adapter(d, base=gpt2())
    a = next(t for k, t in state.tensors.items() if "lora_A" in k)
    b = next(t for k, t in state.tensors.items() if "lora_B" in k)
    assert tuple(a.shape) == (4, 32) and tuple(b.shape) == (96, 4)
    wrong = AdapterState(state.config, {k: t.T.contiguous() if "lora_B" in k else t for k, t in state.tensors.items()})
    with pytest.raises(MclError, match=r"B is \(4, 96\).*needs \(96, 4\)"):
        check_fits(wrong, gpt2())


def test_structure_names_the_first_module_the_config_does_not_target(tiny_llama, tmp_path):
    _, d = saved(tmp_path, tiny_llama, target_modules=["q_proj", "v_proj"])
    state = read_adapter(d)
    state.config["target_modules"] = ["v_proj"]
    with pytest.raises(MclError, match=r"LoRA tensors for model\.layers\.0\.self_attn\.q_proj \(2 of 4 modules\)"):
        check_structure(state)


def test_mixed_precision_is_cast_to_the_common_dtype_and_agreeing_states_are_kept(tiny_llama, tmp_path):
    _, d = saved(tmp_path, tiny_llama, target_modules=["q_proj"])
    a = read_adapter(d)
    b16 = AdapterState(a.config, {k: (2 * t).half() for k, t in a.tensors.items()})
    b32 = AdapterState(a.config, {k: t.float() for k, t in b16.tensors.items()})
    mixed, exact = Linear(a, b16), Linear(a, b32)
    assert {t.dtype for n in mixed.nodes for t in n.tensors.values()} == {torch.float32}
    for t in (0.0, 0.3, 1.0):
        for k in a.tensors:
            assert torch.equal(mixed.point(t).tensors[k], exact.point(t).tensors[k])
    bf = AdapterState(a.config, {k: t.bfloat16() for k, t in a.tensors.items()})
    assert {t.dtype for s in same_dtype([b16, bf]) for t in s.tensors.values()} == {torch.float32}
    kept = same_dtype([a, b32])
    assert kept[0] is a and kept[1] is b32


def test_a_resume_state_of_other_shapes_names_its_file(tiny_llama):
    peft = get_peft_model(tiny_llama, LoraConfig(r=4, target_modules=["q_proj"]))
    state = get_state(peft)
    key = sorted(state)[0]
    with pytest.raises(MclError, match=rf"^state/adapters.safetensors does not match the model's LoRA tensors: {key} "
                                       r"is \(2, 32\), the model's is \(4, 32\)$"):
        set_state(peft, {**state, key: state[key][:2]}, where="state/adapters.safetensors")
    with pytest.raises(MclError, match="exists only in the model"):
        set_state(peft, {k: v for k, v in state.items() if k != key})


def test_cache_records_round_trip_and_are_bound_to_their_key(tmp_path, capsys):
    cache = PointCache(tmp_path)
    record = {"loss": 0.25, "metric": None, "metric_name": "accuracy", "higher_is_better": True,
              "example_sums": [0.5, 0.25], "example_counts": [2.0, 1.0]}
    cache.put("ab" * 32, record)
    assert cache.get("ab" * 32, examples=2) == record
    assert cache.get("ab" * 32, examples=3) is None
    assert "per-example lists of lengths [2] for 3 examples" in capsys.readouterr().err
    other = tmp_path / "cd" / f"{'cd' * 32}.json"
    other.parent.mkdir()
    other.write_text((tmp_path / "ab" / f"{'ab' * 32}.json").read_text())  # a sound record under another key
    assert cache.get("cd" * 32) is None and "checksum mismatch" in capsys.readouterr().err
    assert json.loads(other.read_text())["loss"] == 0.25  # left for the sweep to overwrite
