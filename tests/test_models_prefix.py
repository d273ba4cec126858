"""Soft prefixes at the decoder equal PEFT's prompt tuning: logits, the decoder-direct loss path, generation."""

import copy

import torch
from peft import PromptTuningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.models.prefix import SoftPrefix, current_input_mask, input_positions


def _pair(L: int = 5):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    base = LlamaForCausalLM(cfg).eval()
    prompt = torch.randn(L, 32) * 0.5
    peft = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=L)).eval()
    peft.prompt_encoder["default"].embedding.weight.data.copy_(prompt)
    soft = SoftPrefix(base, lambda ids, mask: prompt.expand(mask.shape[0], L, 32))
    return base, peft, soft, L


def test_soft_prefix_equals_peft_prompt_tuning_for_logits_and_the_decoder_path():
    base, peft, soft, L = _pair()
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding, as in training and scoring
    with torch.no_grad():
        theirs = peft(input_ids=ids, attention_mask=mask).logits[:, L:]
        mine = base(input_ids=ids, attention_mask=mask).logits
        hidden = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state  # the loss evaluator's path
        keep = torch.tensor([2, 5])
        kept = base(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    m = mask.bool()
    assert hidden.shape[:2] == ids.shape
    assert torch.allclose(mine[m], theirs[m], atol=1e-6) and torch.allclose(base.lm_head(hidden)[m], theirs[m], atol=1e-6)
    assert torch.allclose(kept, theirs[:, keep], atol=1e-6)
    with soft.disabled(), torch.no_grad():
        bare = base(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(bare[m], mine[m], atol=1e-3)


def test_soft_prefix_cached_generation_with_left_padding_equals_full_forwards_each_step():
    """Decode steps find the prefix in the KV cache: the same tokens as re-running the whole prefixed sequence."""
    base, peft, soft, L = _pair()
    ids = torch.randint(3, 100, (2, 7))
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0  # left padding, as in generation
    calls = []
    provider = soft.provider
    soft.provider = lambda i, m: calls.append(i.shape) or provider(i, m)
    with torch.no_grad():
        mine = base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[:, 7:]
        assert calls == [ids.shape]  # the prefix is built once, at prefill
        seq, m = ids, mask
        for _ in range(8):  # no cache: every step runs the prefixed sequence through (equal to PEFT's logits above)
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            nxt = base(input_ids=seq, attention_mask=m, position_ids=pos, use_cache=False).logits[:, -1].argmax(-1)
            seq, m = torch.cat([seq, nxt[:, None]], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
    assert torch.equal(mine, seq[:, 7:])


def test_input_positions_are_the_callers_mask_or_every_real_token():
    mask = torch.tensor([[1, 1, 1, 0]])
    assert current_input_mask(mask).tolist() == [[True, True, True, False]]
    with input_positions(lambda: torch.tensor([[1, 1, 0, 0]])):
        assert current_input_mask(mask).tolist() == [[True, True, False, False]]
    assert current_input_mask(mask).tolist() == [[True, True, True, False]]
