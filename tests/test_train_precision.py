"""Training at scale on the tiny model: model_dtype (bf16 base, fp32 LoRA/optimizer/slow learner),
gradient checkpointing, the fused slow update, the one-reduction consistency loss, and their bad input."""

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mcl.adapters import AdapterState, LoraSpec, add_lora, get_state, lora_parameters
from mcl.cli.main import main
from mcl.data.tokenize import Encoded, collate
from mcl.models import enable_gradient_checkpointing
from mcl.paths import Linear, lerp_states_
from mcl.train.config import load_config
from mcl.train.data import length_buckets
from mcl.train.loop import train
from mcl.train.losses import answer_ce, to_device
from mcl.train.methods import METHODS, Context
from test_train import _cfg, setting  # noqa: F401  (module fixture)


def _ilora(setting, dtype=torch.float32, **args):  # noqa: F811
    model = AutoModelForCausalLM.from_pretrained(setting["model"], dtype=dtype)
    cfg = _cfg(setting, setting["root"] / "unused")
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=cfg, tasks=["a", "b"])
    method = METHODS["ilora"](ctx, **args)
    ctx.model = method.setup(model, LoraSpec(r=4, alpha=8.0), seed=0)
    return method


def _batch():
    short = Encoded([1, 5, 6, 7, 8, 2], [-100, -100, -100, 7, 8, 2])
    long = Encoded([1, 5, 6, 9, 9, 9, 9, 7, 8, 2], [-100] * 7 + [7, 8, 2])
    return to_device(collate([short, long], pad=0), "cpu")


def test_bf16_base_keeps_lora_slow_learner_and_optimizer_state_fp32(setting, tmp_path):  # noqa: F811
    method = _ilora(setting, torch.bfloat16)
    peft = method.ctx.peft
    base = {p.dtype for n, p in peft.named_parameters() if "lora_" not in n}
    assert base == {torch.bfloat16}
    for name in ("fast", "slow"):
        assert {p.dtype for p in lora_parameters(peft, name).values()} == {torch.float32}
    run = train(_cfg(setting, tmp_path, "ilora", model_dtype="bf16", method_args={"buffer_size": 16},
                     tasks=setting["tasks"][:2], **{"train.steps_per_task": 2}), progress_bar=False)
    optimizer = torch.load(run / "state" / "optimizer.pt", weights_only=True)["state"]
    assert optimizer and all(s["exp_avg"].dtype == torch.float32 for s in optimizer.values())
    for learner in ("fast", "slow"):
        saved = load_file(next((run / "tasks").glob("1-*")) / learner / "adapter_model.safetensors")
        assert {t.dtype for t in saved.values()} == {torch.float32}
        assert all(torch.isfinite(t).all() for t in saved.values())


def test_bf16_training_loss_is_close_to_fp32(setting):  # noqa: F811
    batch = _batch()
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = add_lora(AutoModelForCausalLM.from_pretrained(setting["model"], dtype=dtype), LoraSpec(r=4), seed=0)
        s, n, _ = answer_ce(model, batch)
        losses[dtype] = float(s.detach() / n)
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.02)


def test_gradient_checkpointing_gives_the_same_loss_and_grads(setting):  # noqa: F811
    batch = _batch()
    model = add_lora(AutoModelForCausalLM.from_pretrained(setting["model"]), LoraSpec(r=4), seed=0)
    with torch.no_grad():  # B starts at zero: give it values so that A's gradient is not zero too
        for k, p in lora_parameters(model).items():
            p.add_(torch.randn_like(p) * 0.1)
    model.train()
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            enable_gradient_checkpointing(model)
        assert model.base_model.model.model.gradient_checkpointing is checkpointing
        model.zero_grad()
        s, n, _ = answer_ce(model, batch)
        (s / n).backward()
        results.append((float(s / n), {k: p.grad.clone() for k, p in lora_parameters(model).items()}))
    (loss0, grads0), (loss1, grads1) = results
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert any(g.abs().sum() > 0 for g in grads0.values())
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_run_matches_a_plain_run(setting, tmp_path):  # noqa: F811
    runs = [train(_cfg(setting, tmp_path / str(gc), tasks=setting["tasks"][:1], **{"train.steps_per_task": 2,
                       "train.gradient_checkpointing": gc}), progress_bar=False) for gc in (False, True)]
    a, b = (load_file(next((r / "tasks").glob("0-*")) / "adapter_model.safetensors") for r in runs)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_fused_lerp_is_the_linear_path_formula_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    a = AdapterState({}, {f"m{i}.lora_A.weight": torch.randn(4, 7, generator=g) for i in range(5)})
    b = AdapterState({}, {k: torch.randn(v.shape, generator=g) for k, v in a.tensors.items()})
    for t in (0.0, 0.1, 1 - 0.99, 0.5, 0.75, 1.0):
        live = [v.clone() for v in a.tensors.values()]
        lerp_states_(live, list(b.tensors.values()), t)
        want = Linear(a, b).point(t)
        assert all(torch.equal(x, want.tensors[k]) for x, k in zip(live, a.tensors))
    assert all(torch.equal(Linear(a, b).point(1.0).tensors[k], b.tensors[k]) for k in a.tensors)


def test_slow_update_equals_the_paths_point_exactly(setting):  # noqa: F811
    method = _ilora(setting, ema_lambda=0.9)
    peft = method.ctx.peft
    with torch.no_grad():
        for p in lora_parameters(peft, "fast").values():
            p.add_(torch.randn_like(p) * 0.1)
    method.steps = 50
    slow0, fast0 = (AdapterState({}, get_state(peft, n)) for n in ("slow", "fast"))
    method.update_slow()
    want = Linear(slow0, fast0).point(1.0 - 0.9)
    assert all(torch.equal(v, want.tensors[k]) for k, v in get_state(peft, "slow").items())


@pytest.mark.parametrize("target", ["max", "slow"])
def test_stacked_consistency_equals_the_per_layer_definition(setting, target):  # noqa: F811
    method = _ilora(setting, consistency_target=target)
    batch = _batch()
    _, _, out = answer_ce(method.ctx.peft, batch, output_hidden_states=True)
    h_fast = method._select(out.hidden_states)
    h_slow = [h.detach() + 0.3 * torch.randn_like(h) for h in h_fast]
    m = batch["attention_mask"].bool()
    total, count = 0.0, 0
    for hw, hl in zip(h_fast, h_slow):  # the definition: Z per layer, padding dropped by indexing
        z = torch.maximum(hw, hl) if target == "max" else hl
        diff = (hw - z.detach())[m]
        total, count = total + (diff ** 2).sum(), count + diff.numel()
    ref = total / count
    fast = method.consistency(h_fast, h_slow, batch["attention_mask"])
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=0)
    params = [p for p in lora_parameters(method.ctx.peft, "fast").values()]
    g_ref = torch.autograd.grad(ref, params, retain_graph=True, allow_unused=True)
    g_fast = torch.autograd.grad(fast, params, allow_unused=True)
    for x, y in zip(g_fast, g_ref):
        if y is not None:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-9)


def test_length_buckets_split_only_when_it_saves_padding():
    assert length_buckets([3, 10, 4, 10], 0.05) == [([0, 2], 4), ([1, 3], 10)]
    assert length_buckets([9, 10, 10, 10], 0.05) == [([0, 1, 2, 3], 10)]  # saves 2.5% only
    assert length_buckets([3, 10, 4, 10], 0.5) == [([0, 1, 2, 3], 10)]
    assert length_buckets([7], 0.0) == [([0], 7)]


def test_slow_states_in_length_groups_equal_one_padded_forward(setting):  # noqa: F811
    """The slow forward may skip padding by length groups; each row's states at its positions do not change."""
    method = _ilora(setting)
    peft = method.ctx.peft
    with torch.no_grad():
        for p in lora_parameters(peft, "slow").values():
            p.add_(torch.randn_like(p) * 0.1)  # the learners differ, so a wrong adapter would show
    rows = [Encoded(list(range(1, n + 1)), [-100] * n) for n in (3, 12, 4, 12, 5)]
    replay = to_device(collate(rows, pad=0), "cpu", positions=True)
    assert len(length_buckets(replay["lengths"], 0.05)) == 2
    seen = []
    hook = peft.get_base_model().model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        got = method.slow_states(replay)
    finally:
        hook.remove()
    assert seen == [(3, 5), (2, 12)]
    peft.base_model.set_adapter("slow")
    with torch.no_grad():
        ref = method._select(peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"],
                                  output_hidden_states=True).hidden_states)
    peft.base_model.set_adapter("fast")
    m = replay["attention_mask"].bool()
    assert len(got) == len(ref) and all(g.shape == r.shape for g, r in zip(got, ref))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g[m], r[m], rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in lora_parameters(peft, "fast").values())
    assert not any(p.requires_grad for p in lora_parameters(peft, "slow").values())


def test_new_keys_at_their_defaults_keep_old_run_hashes(setting):  # noqa: F811
    cfg = load_config(None, model=setting["model"])
    d = cfg.to_dict()
    d.pop("runs_dir"), d.pop("model_dtype"), d.pop("text")  # keys added later leave the hash at their defaults
    for key in ("gradient_checkpointing", "epochs_per_task", "log_with", "log_every", "lr_schedule",
                "ignore_memory_check", "fsdp"):
        d["train"].pop(key)
    from mcl.io import sha256_json

    assert cfg.run_hash([]) == sha256_json({"config": d, "data": []})[:8]
    assert load_config(None, model=setting["model"], model_dtype="bf16").run_hash([]) != cfg.run_hash([])


@pytest.mark.parametrize("argv, message", [
    (["model_dtype=int8"], "model_dtype must be fp32|bf16|fp16"),
    (["--dtype", "int8"], "invalid choice"),
    (["--device", "cuda:0"], "CUDA"),
])
def test_bad_precision_and_device_inputs_exit_2(setting, tmp_path, capsys, argv, message):  # noqa: F811
    if message == "CUDA" and torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU")
    with pytest.raises(SystemExit) if message == "invalid choice" else _nothing():
        rc = main(["train", f"model={setting['model']}", f"runs_dir={tmp_path}", *argv, "--quiet"])
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err and (message == "invalid choice" or len(err.splitlines()) == 1)
    assert not list(tmp_path.iterdir())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
