"""The memory formula's exact parts equal live tensor bytes; the 7B table's orderings hold."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import LoraSpec, add_lora, lora_parameters
from mcl.train.memory import GIB, LLAMA2_7B, Shape, estimate

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=500, tie_word_embeddings=False)


@pytest.mark.parametrize("shape", [SMOLLM2, TINY])
def test_base_parameter_count_is_exact(shape):
    config = LlamaConfig(**shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert Shape.from_config(config).base_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"]])
def test_lora_bytes_and_optimizer_state_are_exact(targets):
    config = LlamaConfig(**TINY)
    spec = LoraSpec(r=4, target_modules=targets)
    model = add_lora(LlamaForCausalLM(config).to(torch.bfloat16), spec, seed=0)
    params = list(lora_parameters(model).values())
    assert {p.dtype for p in params} == {torch.float32}
    for p in params:
        p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW(params)
    opt.step()
    live = sum(p.numel() * p.element_size() for p in params) * 2  # weights + grads
    live += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.dim())
    base = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    est = estimate(Shape.from_config(config), spec, "ilora", model_dtype="bf16")
    assert est.lora_and_optimizer * GIB == live and est.base * GIB == base
    assert est.slow_learner * GIB == sum(p.numel() * 4 for p in params)


def test_llama2_7b_orderings():
    spec = LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
    fp32 = estimate(LLAMA2_7B, spec, "seq", 1, 1024, "fp32")
    bf16 = estimate(LLAMA2_7B, spec, "seq", 1, 1024, "bf16")
    assert fp32.base == pytest.approx(2 * bf16.base) and 12 < bf16.base < 13  # 6.74B params × 2 bytes
    plain = estimate(LLAMA2_7B, spec, "ilora", 4, 1024, "bf16")
    ckpt = estimate(LLAMA2_7B, spec, "ilora", 4, 1024, "bf16", checkpointing=True)
    assert ckpt.activations < plain.activations / 5 and ckpt.fits(80) and not plain.fits(80)
