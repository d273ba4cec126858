"""Merged forwards: the same losses as PEFT's unmerged LoRA layers (fp32 compute on bf16 bases, tied weights
untied), and W0 restored bit for bit."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from mcl.adapters import AdapterState, get_state
from mcl.data.task import Example
from mcl.eval import LossEvaluator
from mcl.paths import Linear
from mcl.paths.lora_math import delta_weight, lora_terms
from mcl.paths.merged_forward import MergedForwardBinding, bind_for_forward, can_merge, delta_state
from mcl.paths.spaces import working_copy_bytes

TEXTS = ["The committee voted 7 to 2.", "def add(a, b):", "Stance: favor", "Inflation rose in March."]


def random_adapter(model, seed, **lora):
    lora = {"target_modules": ["q_proj", "v_proj", "up_proj"], **lora}
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, **lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    config = {k: v for k, v in peft.peft_config["default"].to_dict().items() if k != "runtime_config"}
    return AdapterState(config, get_state(peft))


@pytest.mark.parametrize("space", ["factors", "delta"])
def test_merged_forward_matches_unmerged_and_restores_w0_exactly(tiny_llama, tiny_tokenizer, space):
    evaluator = LossEvaluator(tiny_tokenizer, [Example(t, t[::-1]) for t in TEXTS], batch_size=2)
    path = Linear(random_adapter(tiny_llama, 1), random_adapter(tiny_llama, 2), space=space)
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    assert can_merge(path)
    unmerged = []
    with path.bind(tiny_llama) as live:
        for t in (0.0, 0.3, 1.0):
            live.apply(path.point(t))
            unmerged.append(evaluator.loss(live.model))
    with bind_for_forward(path, tiny_llama) as live:
        assert isinstance(live, MergedForwardBinding)
        merged = []
        for t in (0.0, 0.3, 1.0):
            live.apply(path.point(t))
            merged.append(evaluator.loss(live.model))
        assert not torch.equal(live.model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                               before["model.layers.0.self_attn.q_proj.weight"])
    assert merged == pytest.approx(unmerged, abs=1e-6) and len(set(merged)) == 3
    after = tiny_llama.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_dora_and_merged_space_keep_their_own_binding(tiny_llama):
    dora = random_adapter(tiny_llama, 1, use_dora=True)
    assert not can_merge(Linear(dora, dora, space="factors"))
    plain = random_adapter(tiny_llama, 1)
    assert not can_merge(Linear(plain, plain, space="merged"))
    with bind_for_forward(Linear(dora, dora), tiny_llama) as live:
        assert not isinstance(live, MergedForwardBinding)


def test_bf16_base_merges_exactly_into_an_fp32_working_copy(make_tiny_llama):
    fp32 = make_tiny_llama()
    path = Linear(random_adapter(fp32, 1), random_adapter(fp32, 2), space="delta")
    bf16 = make_tiny_llama().to(torch.bfloat16)
    adapted = [m for n, m in bf16.named_modules() if n.endswith(("q_proj", "v_proj", "up_proj"))]
    assert working_copy_bytes(bf16, delta_state(path.point(0.0))) == 4 * sum(m.weight.numel() for m in adapted)
    assert working_copy_bytes(fp32, delta_state(path.point(0.0))) == 0
    q = bf16.get_submodule("model.layers.0.self_attn.q_proj")
    w0, before = q.weight, q.weight.detach().clone()
    term = next(t for t in lora_terms(path.point(0.3), "merged")
                if t.relative_module == "model.layers.0.self_attn.q_proj")
    x = torch.randn(3, q.in_features, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with bind_for_forward(path, bf16) as live:
        live.apply(path.point(0.3))
        merged = w0.float() + delta_weight(path.point(0.3), term)
        assert q.weight.dtype == torch.float32
        torch.testing.assert_close(q.weight, merged, rtol=0, atol=1e-6)
        assert not torch.equal(merged.to(torch.bfloat16).float(), merged)  # a bf16 merge would round ΔW
        out = q(x)
        assert out.dtype == torch.bfloat16 and torch.equal(out, F.linear(x.float(), q.weight).to(torch.bfloat16))
        assert torch.equal(w0, before)  # the bf16 weight itself is never written
    assert q.weight is w0 and torch.equal(q.weight, before)
    assert not q._forward_hooks and not q._forward_pre_hooks


def test_tied_lm_head_gets_its_own_copy_and_matches_unmerged(tiny_llama, tiny_tokenizer):
    tiny_llama.lm_head.weight = tiny_llama.model.embed_tokens.weight  # tied, as in SmolLM2
    evaluator = LossEvaluator(tiny_tokenizer, [Example(t, t[::-1]) for t in TEXTS], batch_size=2)
    path = Linear(*(random_adapter(tiny_llama, seed, target_modules=["lm_head", "q_proj"]) for seed in (1, 2)))
    embedding = tiny_llama.model.embed_tokens.weight.detach().clone()
    assert working_copy_bytes(tiny_llama, delta_state(path.point(0.0))) == 4 * embedding.numel()  # lm_head alone
    with path.bind(tiny_llama) as live:
        live.apply(path.point(0.4))
        unmerged = evaluator.loss(live.model)
    with bind_for_forward(path, tiny_llama) as live:
        live.apply(path.point(0.4))
        assert torch.equal(tiny_llama.model.embed_tokens.weight, embedding)
        assert evaluator.loss(live.model) == pytest.approx(unmerged, abs=1e-6)
    assert tiny_llama.lm_head.weight is tiny_llama.model.embed_tokens.weight
