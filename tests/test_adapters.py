"""LoRA adapters: mcl-saved dirs load in plain peft, plain-peft dirs load in mcl, compatibility checks."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import LoraSpec, add_lora, check_compatible, get_state, read_adapter, save_adapter, set_state
from mcl.cli.main import main
from mcl.errors import MclError


def tiny_base(hidden=32, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def randomise(model, adapter="default", seed=1):
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in get_state(model, adapter).items()}
    set_state(model, state, adapter)
    return state


def plain_peft_dir(tmp_path, name, seed=1, **kw):
    model = get_peft_model(tiny_base(), LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **kw}))
    randomise(model, seed=seed)
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_mcl_saved_adapter_loads_in_plain_peft(tmp_path):
    model = add_lora(tiny_base(), LoraSpec(r=4), seed=0)
    randomise(model)
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        want = model(input_ids=x).logits
    save_adapter(model, tmp_path / "a", meta={"task": "t1", "step": 3})
    loaded = PeftModel.from_pretrained(tiny_base(), tmp_path / "a").eval()
    with torch.no_grad():
        got = loaded(input_ids=x).logits
    torch.testing.assert_close(got, want)
    meta = json.loads((tmp_path / "a" / "mcl.json").read_text())
    assert meta["task"] == "t1" and len(meta["sha256"]) == 64


def test_second_adapter_saved_flat_and_loadable(tmp_path):
    model = add_lora(tiny_base(), LoraSpec(r=4), seed=0)
    add_lora(model, LoraSpec(r=4), "slow")
    want = randomise(model, "slow", seed=5)
    save_adapter(model, tmp_path / "slow", "slow")
    assert (tmp_path / "slow" / "adapter_config.json").is_file()
    st = read_adapter(tmp_path / "slow")
    assert st.tensors.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(st.tensors[k], want[k])


def test_plain_peft_dir_read_by_mcl_and_applied_in_place(tmp_path):
    d = plain_peft_dir(tmp_path, "p")
    st = read_adapter(d)
    assert st.config["r"] == 4 and not st.meta
    reference = PeftModel.from_pretrained(tiny_base(), d).eval()
    live = get_peft_model(tiny_base(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).eval()
    set_state(live, st.tensors)
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(live(input_ids=x).logits, reference(input_ids=x).logits)


def test_dora_keys_line_up(tmp_path):
    model = add_lora(tiny_base(), LoraSpec(r=4, use_dora=True), seed=0)
    save_adapter(model, tmp_path / "d")
    assert read_adapter(tmp_path / "d").tensors.keys() == get_state(model).keys()


MISMATCHES = {
    "r": {"r": 8},
    "lora_alpha": {"lora_alpha": 4},
    "use_rslora": {"use_rslora": True},
    "use_dora": {"use_dora": True},
    "target_modules": {"target_modules": ["q_proj", "k_proj"]},
}


@pytest.mark.parametrize("field", sorted(MISMATCHES))
def test_compat_rejects_each_field(tmp_path, field):
    a = read_adapter(plain_peft_dir(tmp_path, "a"))
    b = read_adapter(plain_peft_dir(tmp_path, "b", **MISMATCHES[field]))
    with pytest.raises(MclError, match=rf"{field} differs"):
        check_compatible(a, b, "factors")


def test_compat_base_model_and_shapes(tmp_path):
    a = read_adapter(plain_peft_dir(tmp_path, "a"))
    b = read_adapter(plain_peft_dir(tmp_path, "b"))
    check_compatible(a, b, "factors")
    b.meta["base_model"], a.meta["base_model"] = "llama-7b", "smollm2"
    with pytest.raises(MclError, match="base_model differs"):
        check_compatible(a, b)
    wide = get_peft_model(tiny_base(hidden=64), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    wide.save_pretrained(tmp_path / "w")
    with pytest.raises(MclError, match="shapes differs"):
        check_compatible(a, read_adapter(tmp_path / "w"), "factors")
    with pytest.raises(MclError, match="delta_shapes differs"):
        check_compatible(a, read_adapter(tmp_path / "w"), "delta")


def test_delta_space_tolerates_different_ranks(tmp_path):
    a = read_adapter(plain_peft_dir(tmp_path, "a"))
    b = read_adapter(plain_peft_dir(tmp_path, "b", r=8, lora_alpha=16))
    check_compatible(a, b, "delta")
    with pytest.raises(MclError, match="r differs"):
        check_compatible(a, b, "factors")


def _cli_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_bad_adapter_dirs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _cli_error(capsys, ["adapters", "info", str(tmp_path / "empty")])
    assert rc == 2 and "no adapter_config.json" in err and len(err.splitlines()) == 1
    rc, err = _cli_error(capsys, ["adapters", "info", str(tmp_path / "missing")])
    assert rc == 2 and "does not exist" in err and len(err.splitlines()) == 1
    d = plain_peft_dir(tmp_path, "c")
    (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    rc, err = _cli_error(capsys, ["adapters", "info", str(d)])
    assert rc == 2 and "corrupt safetensors" in err and len(err.splitlines()) == 1


def test_cli_nan_adapter_and_incompatible_pair(tmp_path, capsys):
    a = plain_peft_dir(tmp_path, "a")
    b = plain_peft_dir(tmp_path, "b", r=8)
    rc, err = _cli_error(capsys, ["adapters", "check", str(a), str(b)])
    assert rc == 2 and "r differs" in err
    model = get_peft_model(tiny_base(), LoraConfig(r=4, target_modules=["q_proj"]))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_A" in n)[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    rc, err = _cli_error(capsys, ["adapters", "info", str(tmp_path / "nan")])
    assert rc == 2 and "NaN" in err
