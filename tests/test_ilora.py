"""I-LoRA: one test per defect of the released code (shared/ILORA.md), plus the ER-equivalence limit."""

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mcl.adapters import LoraSpec, get_state, lora_parameters
from mcl.data.tokenize import Encoded, collate
from mcl.train.loop import train
from mcl.train.losses import answer_ce
from mcl.train.methods import METHODS, Context
from test_train import _adapter_dirs, _cfg, setting  # noqa: F401  (module fixture)


def _method(setting, **args):
    model = AutoModelForCausalLM.from_pretrained(setting["model"])
    cfg = _cfg(setting, setting["root"] / "unused")
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=cfg, tasks=["a", "b"])
    method = METHODS["ilora"](ctx, **args)
    ctx.model = method.setup(model, LoraSpec(r=4, alpha=8.0), seed=0)
    return method, model


def test_slow_update_is_exactly_the_interpolation_and_leaves_fast_alone(setting):
    method, _ = _method(setting, ema_lambda=0.9)
    peft = method.ctx.peft
    with torch.no_grad():  # make the learners differ, as after a gradient step
        for p in lora_parameters(peft, "fast").values():
            p.add_(torch.randn_like(p) * 0.1)
    method.updates = 50  # past the warm-up: λ_k = λ
    slow0, fast0 = get_state(peft, "slow"), get_state(peft, "fast")
    method.update_slow()
    slow1, fast1 = get_state(peft, "slow"), get_state(peft, "fast")
    changed = 0
    for k in slow0:
        want = 0.9 * slow0[k] + 0.1 * fast0[k]
        torch.testing.assert_close(slow1[k], want, rtol=0, atol=1e-7)
        assert torch.equal(fast1[k], fast0[k])
        changed += not torch.equal(slow1[k], slow0[k])
    assert changed > 0


def test_warmup_lambda_follows_cls_er(setting):
    method, _ = _method(setting, ema_lambda=0.99)
    lams = []
    for k in range(4):
        method.updates = k
        lams.append(method.current_lambda())
    assert lams == [0.0, 0.5, pytest.approx(2 / 3), 0.75]
    method.updates = 10_000
    assert method.current_lambda() == 0.99


def test_one_base_model_in_memory(setting):
    method, base = _method(setting)
    peft = method.ctx.peft
    assert peft.get_base_model() is base
    n_base = sum(p.numel() for n, p in peft.named_parameters() if "lora_" not in n)
    n_fast = sum(p.numel() for p in lora_parameters(peft, "fast").values())
    n_slow = sum(p.numel() for p in lora_parameters(peft, "slow").values())
    fresh = AutoModelForCausalLM.from_pretrained(setting["model"])
    assert n_base == sum(p.numel() for p in fresh.parameters())
    assert sum(p.numel() for p in peft.parameters()) == n_base + n_fast + n_slow
    assert all(not p.requires_grad for p in lora_parameters(peft, "slow").values())


def test_three_tasks_any_order_write_fast_and_slow(setting, tmp_path):
    order = list(reversed(setting["tasks"]))
    run_dir = train(_cfg(setting, tmp_path, "ilora", tasks=order, method_args={"buffer_size": 16}), progress_bar=False)
    names = sorted(p.name for p in (run_dir / "tasks").iterdir())
    assert names == ["0-count", "1-last", "2-first"]
    for n in names:
        assert (run_dir / "tasks" / n / "fast" / "adapter_model.safetensors").is_file()
        assert (run_dir / "tasks" / n / "slow" / "adapter_model.safetensors").is_file()
    phase = json.loads((run_dir / "metrics" / "phase-2.json").read_text())
    assert set(phase["scores"]) == {"slow", "fast"}
    assert (run_dir / "metrics" / "R_loss_fast.csv").is_file()


def test_padded_and_unpadded_replay_give_the_same_loss(setting):
    method, _ = _method(setting)
    peft = method.ctx.peft
    peft.eval()
    short = Encoded([1, 5, 6, 7, 8, 2], [-100, -100, -100, 7, 8, 2])
    long = Encoded([1, 5, 6, 9, 9, 9, 9, 7, 8, 2], [-100] * 7 + [7, 8, 2])
    padded = collate([short, long], pad=0)
    alone = [collate([e], pad=0) for e in (short, long)]
    with torch.no_grad():
        s_pad, n_pad, out_pad = answer_ce(peft, padded, output_hidden_states=True)
        parts = [answer_ce(peft, b, output_hidden_states=True) for b in alone]
        torch.testing.assert_close(s_pad, parts[0][0] + parts[1][0], rtol=1e-5, atol=1e-5)
        assert int(n_pad) == int(parts[0][1] + parts[1][1])
        slow_pad = [h + 0.3 for h in out_pad.hidden_states]  # a stand-in slow learner: shifted states
        cons_pad = method.consistency(method._select(out_pad.hidden_states), method._select(slow_pad), padded["attention_mask"])
        total, count = 0.0, 0
        for (_, _, out), b in zip(parts, alone):
            hs = method._select(out.hidden_states)
            total += float(method.consistency(hs, [h + 0.3 for h in hs], b["attention_mask"])) * sum(h.numel() for h in hs)
            count += sum(h.numel() for h in hs)
        assert float(cons_pad) == pytest.approx(total / count, rel=1e-5)


def test_gamma0_lambda0_fast_learner_follows_er_exactly(setting, tmp_path):
    er = train(_cfg(setting, tmp_path / "er", "er", method_args={"buffer_size": 16}), progress_bar=False)
    il = train(_cfg(setting, tmp_path / "il", "ilora",
                    method_args={"buffer_size": 16, "ema_lambda": 0.0, "consistency_weight": 0.0}), progress_bar=False)
    for k in range(3):
        er_dir = next((er / "tasks").glob(f"{k}-*"))
        il_dir = next((il / "tasks").glob(f"{k}-*"))
        a = load_file(er_dir / "adapter_model.safetensors")
        b = load_file(il_dir / "fast" / "adapter_model.safetensors")
        s = load_file(il_dir / "slow" / "adapter_model.safetensors")
        for key in a:
            assert torch.equal(a[key], b[key]), key
            assert torch.equal(b[key], s[key]), key  # λ = 0: slow equals fast


def test_released_preset_is_flagged_and_uses_fast_at_inference():
    cls = METHODS["ilora-released"]
    assert cls.defaults["ema_lambda"] == 0.25 and cls.defaults["inference"] == "fast"
    assert "released" in cls.title


def test_snapshots_every_n_steps_trace_fast_and_slow(setting, tmp_path):
    from mcl.adapters import read_adapter

    cfg = _cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:2], **{"text.separator": " "},
               method_args={"buffer_size": 16, "snapshot_every": 2})
    run_dir = train(cfg, progress_bar=False)
    for k, name in enumerate(["first", "last"]):
        task_dir = run_dir / "tasks" / f"{k}-{name}"
        snaps = sorted(p.name for p in (task_dir / "snapshots").iterdir())
        assert snaps == ["step-000002", "step-000004"]
        last = {n: read_adapter(task_dir / "snapshots" / "step-000004" / n) for n in ("fast", "slow")}
        first = read_adapter(task_dir / "snapshots" / "step-000002" / "slow")
        final = read_adapter(task_dir / "slow")
        assert all(torch.equal(last["slow"].tensors[t], final.tensors[t]) for t in final.tensors)
        assert any(not torch.equal(first.tensors[t], final.tensors[t]) for t in final.tensors)
        assert last["fast"].meta["step"] == 4 and last["fast"].meta["task"] == name
        assert final.meta["text"] == last["slow"].meta["text"] == {"separator": " ", "chat_template": False, "bos": "auto"}
    assert json.loads((run_dir / "method.json").read_text())["args"]["snapshot_every"] == 2


def test_snapshots_off_by_default_and_not_pinned(setting, tmp_path):
    run_dir = train(_cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:1], method_args={"buffer_size": 16}),
                    progress_bar=False)
    assert not (run_dir / "tasks" / "0-first" / "snapshots").exists()
    assert "snapshot_every" not in json.loads((run_dir / "method.json").read_text())["args"]
    assert "text" not in json.loads((run_dir / "tasks" / "0-first" / "slow" / "mcl.json").read_text())
