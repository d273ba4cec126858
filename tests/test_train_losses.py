"""Training losses: CE with the LM head at label positions only; I-LoRA's per-layer gap term (value and gradient)."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import LoraSpec, add_lora
from mcl.data.tokenize import Encoded, collate
from mcl.train.losses import answer_ce, output_head, squared_gap, to_device

TINY = dict(hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=300, tie_word_embeddings=False)


def _model():
    torch.manual_seed(0)
    return add_lora(LlamaForCausalLM(LlamaConfig(**TINY)), LoraSpec(r=4, alpha=8.0), seed=0)


def _batch():
    """Rows of different lengths with answers of 1, 3 and 5 tokens (the union of answer columns is wider)."""
    examples = [Encoded([1, 5, 6, 7, 8, 9, 10, 11, 12, 2], [-100] * 9 + [2]),
                Encoded([1, 20, 21, 22, 23, 2], [-100] * 3 + [22, 23, 2]),
                Encoded([1, 30, 31, 32, 33, 34, 35, 2], [-100] * 3 + [33, 34, 35, 36, 2][:4] + [2])]
    return collate(examples, pad=0)


def test_answer_ce_runs_the_head_at_label_rows_only_and_equals_full_logits_ce():
    model = _model()
    batch = to_device(_batch(), "cpu")
    rows = []
    hook = output_head(model).register_forward_hook(lambda m, args, out: rows.append(args[0].shape))
    try:
        loss_sum, n, _ = answer_ce(model, batch)
    finally:
        hook.remove()
    labels = batch["labels"]
    n_labels = int((labels[:, 1:] != -100).sum())
    assert int(n) == n_labels == 9 and rows == [torch.Size([n_labels, TINY["hidden_size"]])]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # every position
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(loss_sum, want, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(loss_sum, [p for p in model.parameters() if p.requires_grad])
    wants = torch.autograd.grad(want, [p for p in model.parameters() if p.requires_grad])
    for g, w in zip(grads, wants):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_answer_ce_finds_label_rows_itself_and_handles_a_batch_without_labels():
    model = _model()
    batch = _batch()
    torch.testing.assert_close(answer_ce(model, batch)[0], answer_ce(model, to_device(batch, "cpu"))[0])
    batch["labels"][:] = -100
    loss_sum, n, _ = answer_ce(model, batch)
    assert float(loss_sum.detach()) == 0.0 and int(n) == 0


@pytest.mark.parametrize("negative_only", [True, False])
def test_squared_gap_value_and_gradient_equal_a_hand_computation(negative_only):
    g = torch.Generator().manual_seed(0)
    fast = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    slow = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    at = torch.tensor([0, 1, 2, 4, 5])  # row 0: 3 positions, row 1: 2 (the rest is padding)
    value = squared_gap(fast, slow, at, negative_only)
    want, grad = 0.0, torch.zeros(2, 4, 3, dtype=torch.float64)
    for p in at.tolist():
        b, t = divmod(p, 4)
        for h in range(3):
            d = float(fast[b, t, h].detach() - slow[b, t, h])
            if negative_only:
                d = min(d, 0.0)
            want += d * d
            grad[b, t, h] = 2 * d
    assert float(value.detach()) == pytest.approx(want, rel=1e-6)
    (3.0 * value).backward()
    torch.testing.assert_close(fast.grad, 3.0 * grad.to(fast.grad.dtype))
    leaf = fast.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: squared_gap(f, slow, at, negative_only), (leaf,))


def test_squared_gap_keeps_no_copy_of_the_states_for_backward():
    fast = torch.randn(2, 4, 8, dtype=torch.bfloat16, requires_grad=True)
    h = fast * 1  # a layer's output inside the graph
    slow = torch.randn(2, 4, 8, dtype=torch.bfloat16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        value = squared_gap(h, slow, torch.arange(6), negative_only=True)
    assert {t.untyped_storage().data_ptr() for t in saved if t.is_floating_point()} == {
        h.untyped_storage().data_ptr(), slow.untyped_storage().data_ptr()}
    want = (h - slow).flatten(0, 1)[:6].clamp(max=0).float().square().sum()  # as the cat form: bf16 gap, fp32 sum
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["max", "slow"])
def test_ilora_consistency_value_and_gradient_equal_the_masked_mse(target, tmp_path):
    from mcl.train.config import load_config
    from mcl.train.methods import METHODS, Context

    cfg = load_config(None, model="tiny", runs_dir=str(tmp_path))
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=cfg, tasks=["a", "b"])
    method = METHODS["ilora"](ctx, consistency_target=target)
    g = torch.Generator().manual_seed(0)
    hw = [torch.randn(3, 5, 8, generator=g, requires_grad=True) for _ in range(3)]
    hl = [torch.randn(3, 5, 8, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    got = method.consistency(hw, hl, mask)
    m = mask.bool()
    z = [torch.maximum(a, b).detach() if target == "max" else b for a, b in zip(hw, hl)]
    want = sum(((a - b)[m] ** 2).sum() for a, b in zip(hw, z)) / (3 * int(m.sum()) * 8)  # the cat-free hand form
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    for a, b in zip(torch.autograd.grad(got, hw), torch.autograd.grad(want, hw)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)

