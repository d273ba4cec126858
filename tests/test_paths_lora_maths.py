"""LoRA maths against hand computations: ΔW inner products, and GPT-2's Conv1D (fan_in_fan_out) targets."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from mcl.adapters import read_adapter
from mcl.paths import Linear, get_space
from mcl.paths.lora_math import delta_weight, lora_terms
from test_paths_spaces import peft_adapter

X = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def hand_deltas(state, scale: float) -> dict[str, torch.Tensor]:
    """ΔW = scale·B·A per module, in float64, keyed by module (A/B found by name, layout [out, in])."""
    out = {}
    for key, a in state.tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removesuffix(".lora_A.weight")
            out[module] = scale * state.tensors[module + ".lora_B.weight"].double() @ a.double()
    return out


def frobenius(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> float:
    return float(sum((x[m] * y[m]).sum() for m in x))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Three plain-peft adapters with the same targets: (state, hand scale s) for three rank/scale settings."""
    d = tmp_path_factory.mktemp("inner")
    return {"a": (peft_adapter(d, "a", 1, r=4, alpha=8), 8 / 4),
            "b": (peft_adapter(d, "b", 2, r=4, alpha=3), 3 / 4),
            "c": (peft_adapter(d, "c", 3, r=8, alpha=4, use_rslora=True), 4 / 8 ** 0.5)}


@pytest.mark.parametrize("space", ["delta", "merged"])
@pytest.mark.parametrize("x,y", [("a", "b"), ("b", "a"), ("a", "c"), ("c", "c")])
def test_delta_inner_product_is_the_frobenius_sum_of_the_delta_weights(adapters, space, x, y):
    (sx, kx), (sy, ky) = adapters[x], adapters[y]
    want = frobenius(hand_deltas(sx, kx), hand_deltas(sy, ky))
    assert get_space(space).inner(sx, sy) == pytest.approx(want, rel=1e-9)


def test_factor_inner_product_is_the_sum_over_tensors(adapters):
    (a, _), (b, _) = adapters["a"], adapters["b"]
    want = sum(float((a.tensors[k].double() * b.tensors[k].double()).sum()) for k in a.tensors)
    assert get_space("factors").inner(a, b) == pytest.approx(want, rel=1e-12)


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


@pytest.fixture(scope="module")
def gpt2_adapters(tmp_path_factory):
    """Two plain-peft LoRA adapters on GPT-2's Conv1D layers (weights stored [in, out]: fan_in_fan_out)."""
    d = tmp_path_factory.mktemp("gpt2")
    states = []
    for seed in (1, 2):
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
        model = get_peft_model(tiny_gpt2(), config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        model.save_pretrained(d / str(seed))
        states.append(read_adapter(d / str(seed)))
    return states


def logits(model):
    with torch.no_grad():
        return model(input_ids=X).logits


def peft_logits(state):
    return logits(PeftModel.from_pretrained(tiny_gpt2(), state.path).eval())


def test_conv1d_delta_weight_is_in_the_base_weight_layout(gpt2_adapters):
    a = gpt2_adapters[0]
    base = tiny_gpt2().state_dict()
    merged = PeftModel.from_pretrained(tiny_gpt2(), a.path).merge_and_unload().state_dict()
    terms = lora_terms(a, "delta")
    assert len(terms) == 8 and all(t.transposed for t in terms)  # c_attn, attn.c_proj, c_fc, mlp.c_proj × 2 layers
    for term in terms:
        key = term.relative_module + ".weight"
        torch.testing.assert_close(delta_weight(a, term), merged[key] - base[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("space", ["factors", "delta", "merged"])
def test_conv1d_endpoints_applied_in_place_match_plain_peft(gpt2_adapters, space):
    a, b = gpt2_adapters
    path = Linear(a, b, space=space)
    with path.bind(tiny_gpt2()) as live:
        for t, state in ((0.0, a), (1.0, b)):
            live.apply(path.point(t))
            torch.testing.assert_close(logits(live.model), peft_logits(state), atol=1e-5, rtol=1e-5)


def test_conv1d_delta_midpoint_is_the_mean_of_the_delta_weights(gpt2_adapters):
    a, b = gpt2_adapters
    model = tiny_gpt2()
    merged_a = PeftModel.from_pretrained(tiny_gpt2(), a.path).merge_and_unload().state_dict()
    merged_b = PeftModel.from_pretrained(tiny_gpt2(), b.path).merge_and_unload().state_dict()
    model.load_state_dict({k: (merged_a[k] + merged_b[k]) / 2 for k in merged_a})
    path = Linear(a, b, space="delta")
    with path.bind(tiny_gpt2()) as live:
        live.apply(path.point(0.5))
        torch.testing.assert_close(logits(live.model), logits(model), atol=1e-5, rtol=1e-5)
