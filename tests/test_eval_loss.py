"""Teacher-forced loss: hand computation, padding invariance, label-only LM head, PeftModel support."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from mcl.data import IGNORE, Example, collate, encode_examples
from mcl.eval.loss import LossEvaluator, label_batch, label_token_losses

EXAMPLES = [
    Example("Ana has 4 apples and buys 3. How many apples does Ana have now?\nAnswer:", "7"),
    Example("Target: bike lanes\nPost: Bike lanes should be expanded.\nStance:", "favor"),
    Example("News: Shares rise.\nTopic:", "business"),
    Example("def add(a, b):\n", "    return a + b"),
    Example("The committee voted 7 to 2.\nSummary:", "The committee approved the budget, 7-2."),
]


def _hand_loss(model, tokenizer, examples):
    """Sum of -log p(label token) over every label token, one unpadded example at a time, ÷ count."""
    total, count = 0.0, 0
    for e in examples:
        p = tokenizer(e.prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(e.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([[tokenizer.bos_token_id] + p + a])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        start = 1 + len(p)
        for j, tok in enumerate(a):
            total -= logp[start + j - 1, tok].item()
            count += 1
    return total / count


def _full_logits_loss(model, tokenizer, examples, max_len=256):
    """Token-pooled loss from the full logits of one right-padded batch (HF-style shift)."""
    b = collate(encode_examples(tokenizer, examples, max_len), tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b["labels"][:, 1:].flatten(), ignore_index=IGNORE).item()


def test_loss_equals_hand_computation(tiny_llama, tiny_tokenizer):
    ev = LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=2)
    assert ev.loss(tiny_llama) == pytest.approx(_hand_loss(tiny_llama, tiny_tokenizer, EXAMPLES), abs=1e-5)
    assert ev.n_tokens == sum(len(tiny_tokenizer(e.answer, add_special_tokens=False)["input_ids"]) + 1 for e in EXAMPLES)


def test_padded_and_unpadded_batches_agree(tiny_llama, tiny_tokenizer):
    unpadded = LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=1).loss(tiny_llama)
    padded = LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=len(EXAMPLES)).loss(tiny_llama)
    assert padded == pytest.approx(unpadded, abs=1e-5)
    sums, counts = LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=3).example_losses(tiny_llama)
    for i, e in enumerate(EXAMPLES):
        assert (sums[i] / counts[i]).item() == pytest.approx(_hand_loss(tiny_llama, tiny_tokenizer, [e]), abs=1e-5)


def test_label_only_head_equals_full_logits(tiny_llama, tiny_tokenizer):
    full = _full_logits_loss(tiny_llama, tiny_tokenizer, EXAMPLES)
    enc = encode_examples(tiny_tokenizer, EXAMPLES, 256)
    with torch.no_grad():
        per_token = label_token_losses(tiny_llama, label_batch(enc, tiny_tokenizer.pad_token_id, range(len(enc))))
    assert per_token.mean().item() == pytest.approx(full, abs=1e-5)


def test_peft_model_loss_uses_the_adapter(make_tiny_llama, tiny_tokenizer):
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    ev = LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=4)
    with_adapter = ev.loss(model)
    assert with_adapter == pytest.approx(_full_logits_loss(model, tiny_tokenizer, EXAMPLES), abs=1e-5)
    with model.disable_adapter():
        assert ev.loss(model) != pytest.approx(with_adapter, abs=1e-3)
    model.train()
    ev.loss(model)
    assert model.training


def test_truncation_keeps_answers_and_hash_tracks_data(tiny_llama, tiny_tokenizer):
    short = LossEvaluator(tiny_tokenizer, EXAMPLES, max_len=16)
    assert all(b.input_ids.shape[1] <= 16 for b in short.batches)
    assert short.data_hash != LossEvaluator(tiny_tokenizer, EXAMPLES, max_len=256).data_hash
    assert LossEvaluator(tiny_tokenizer, EXAMPLES, batch_size=2).data_hash == LossEvaluator(tiny_tokenizer, EXAMPLES).data_hash
    assert short.loss(tiny_llama) > 0
