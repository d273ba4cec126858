"""Merged forwards: the same losses as PEFT's unmerged LoRA layers, and W0 restored bit for bit."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mcl.adapters import AdapterState, get_state
from mcl.data.task import Example
from mcl.eval import LossEvaluator
from mcl.paths import Linear
from mcl.paths.merged_forward import MergedForwardBinding, bind_for_forward, can_merge

TEXTS = ["The committee voted 7 to 2.", "def add(a, b):", "Stance: favor", "Inflation rose in March."]


def random_adapter(model, seed, **lora):
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                                             **lora))
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
    assert merged == pytest.approx(unmerged, abs=1e-5) and len(set(merged)) == 3
    after = tiny_llama.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_dora_and_merged_space_keep_their_own_binding(tiny_llama):
    dora = random_adapter(tiny_llama, 1, use_dora=True)
    assert not can_merge(Linear(dora, dora, space="factors"))
    plain = random_adapter(tiny_llama, 1)
    assert not can_merge(Linear(plain, plain, space="merged"))
    with bind_for_forward(Linear(dora, dora), tiny_llama) as live:
        assert not isinstance(live, MergedForwardBinding)
