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
    method.steps = 50  # past the warm-up: λ_k = λ
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
    for k in range(1, 5):  # optimizer steps, counted from 1 as in CLS-ER
        method.steps = k
        lams.append(method.current_lambda())
    assert lams == [0.5, pytest.approx(2 / 3), 0.75, 0.8]
    method.steps = 10_000
    assert method.current_lambda() == 0.99


def test_warmup_counts_optimizer_steps_not_updates(setting):
    """With update_prob < 1 the warm-up still ends after ~1/(1-λ) optimizer steps (CLS-ER), not updates."""
    method, _ = _method(setting, ema_lambda=0.9, update_prob=0.1)
    seen = []
    orig = method.update_slow
    method.update_slow = lambda: (seen.append((method.steps, method.current_lambda())), orig())
    batch = {"examples": [], "task": []}
    for step in range(200):
        method.after_step(batch, [0], step)
    assert method.steps == 200
    assert 5 <= len(seen) <= 40  # ~10% of the steps updated the slow learner
    assert [lam for _, lam in seen] == [pytest.approx(min(1 - 1 / (k + 1), 0.9)) for k, _ in seen]
    assert seen[2][1] == 0.9  # the third update comes after step 9 and uses λ itself (counting updates: 0.67)


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


# --- the consistency loss, the slow forward and the replay buffer, each pinned against a breakage ---------------
def _method_with_data(setting, **args):
    """An I-LoRA method with a tokenizer, the setting's tasks encoded, and fast ≠ slow (as after training)."""
    from transformers import AutoTokenizer

    from mcl.data import load_tasks
    from mcl.train.data import encode_tasks

    method, _ = _method(setting, **args)
    tok = AutoTokenizer.from_pretrained(setting["model"])
    method.ctx.tokenizer = tok
    data = encode_tasks(load_tasks(setting["tasks"]), tok, 64)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in lora_parameters(method.ctx.peft, "fast").values():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return method, tok, data


def _batch(method, data, task, step):
    from mcl.train.data import make_batch

    return make_batch(data, [task], method.ctx.config.train, 1, step, method.ctx.tokenizer.pad_token_id)


def test_consistency_is_masked_mse_to_the_elementwise_max(setting):
    method, _ = _method(setting)
    g = torch.Generator().manual_seed(0)
    hw = [torch.randn(2, 5, 8, generator=g) for _ in range(2)]
    hl = [torch.randn(2, 5, 8, generator=g) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    m = mask.bool()
    got = method.consistency(hw, hl, mask)
    want = sum(((a - torch.maximum(a, b))[m] ** 2).sum() for a, b in zip(hw, hl)) / (2 * int(m.sum()) * 8)
    torch.testing.assert_close(got, want)
    assert float(got) > 0
    for h in hw + hl:  # garbage at padding positions changes nothing
        h[0, 3:] = torch.randn(2, 8, generator=g) * 100
    torch.testing.assert_close(method.consistency(hw, hl, mask), want)
    method.args["consistency_target"] = "slow"
    want_slow = sum(((a - b)[m] ** 2).sum() for a, b in zip(hw, hl)) / (2 * int(m.sum()) * 8)
    torch.testing.assert_close(method.consistency(hw, hl, mask), want_slow)


def test_loss_uses_the_slow_adapter_for_the_target(setting):
    """CE(current, replay) + γ·consistency, recomputed here with each adapter made active by hand."""
    method, _, data = _method_with_data(setting)
    peft = method.ctx.peft
    peft.eval()
    method.buffer.add(data[0].train[:16], [0] * 16)
    batch = _batch(method, data, 1, 0)
    rng = method.buffer.generator.get_state()
    with torch.no_grad():
        loss = method.loss(batch, [1])
    method.buffer.generator.set_state(rng)
    replay = method.replay_batch([1], len(batch["input_ids"]))
    with torch.no_grad():
        peft.base_model.set_adapter("fast")
        s_cur, n_cur, _ = answer_ce(peft, batch)
        s_buf, n_buf, out_fast = answer_ce(peft, replay, output_hidden_states=True)
        peft.base_model.set_adapter("slow")
        out_slow = peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"], output_hidden_states=True)
        peft.base_model.set_adapter("fast")
    m = replay["attention_mask"].bool()
    pairs = list(zip(out_fast.hidden_states[1:], out_slow.hidden_states[1:]))
    cons = sum(((hw - torch.maximum(hw, hl))[m].float() ** 2).sum() for hw, hl in pairs) / (
        len(pairs) * int(m.sum()) * pairs[0][0].shape[-1])
    assert float(cons) > 1e-6  # the learners differ, so the target is not the fast states themselves
    want = 0.5 * (s_cur / n_cur + s_buf / n_buf) + cons
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_every_forward_of_the_loss_gets_its_batch_attention_mask(setting):
    """Right padding hides a dropped mask from the loss value, so the forwards' inputs are checked directly."""
    method, _, data = _method_with_data(setting)
    peft = method.ctx.peft
    method.buffer.add(data[0].train[:16], [0] * 16)
    batch = _batch(method, data, 1, 0)
    assert not batch["attention_mask"].all()  # the batch is padded
    seen = []
    decoder = peft.get_base_model().model
    hook = decoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((kwargs["input_ids"], kwargs.get("attention_mask"))), with_kwargs=True)
    try:
        method.loss(batch, [1])
    finally:
        hook.remove()
    assert 3 <= len(seen) <= 4  # current CE, replay CE + fast states, slow states (in one or two length groups)
    for ids, mask in seen:
        assert mask is not None
        assert mask.shape == ids.shape
        assert bool((ids[mask == 0] == method.ctx.tokenizer.pad_token_id).all())  # it masks exactly the padding
        assert torch.equal(mask, mask.cummin(dim=1).values)  # right padding: ones, then zeros
    assert torch.equal(seen[0][1], batch["attention_mask"])
    def rows(forwards):  # each row's unpadded ids
        return sorted(tuple(i[m == 1].tolist()) for ids, mask in forwards for i, m in zip(ids, mask))

    assert rows(seen[2:]) == rows(seen[1:2])  # the slow forward(s) see exactly the replay batch's rows
    assert not seen[1][1].all()  # the replay batch is padded too, and its mask says so


def test_reservoir_keeps_every_example_with_equal_probability():
    """Vitter's R: after n offers each example is kept with probability k/n (chi-square over 2000 seeds)."""
    from scipy.stats import chi2

    from mcl.train.buffer import ReservoirBuffer

    n, k, trials = 40, 8, 2000
    counts = torch.zeros(n)
    for seed in range(trials):
        buf = ReservoirBuffer(k, seed=seed)
        buf.add([Encoded([i], [i]) for i in range(n)], [0] * n)
        assert len(buf) == k and buf.n_seen == n
        for ids, _, _ in buf.items:
            counts[ids[0]] += 1
    expected = trials * k / n
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert chi2.sf(stat, n - 1) > 1e-3, counts.tolist()
    first, last = counts[: n // 2].sum(), counts[n // 2:].sum()  # early and late offers equally likely kept
    assert abs(first - last) < 0.05 * trials * k


def test_reservoir_sampling_is_uniform_without_replacement_and_seeded():
    from scipy.stats import chi2

    from mcl.train.buffer import ReservoirBuffer

    def filled(seed):
        buf = ReservoirBuffer(10, seed=seed)
        buf.add([Encoded([i, i], [-100, i]) for i in range(10)], list(range(10)))
        return buf

    buf = filled(0)
    counts = torch.zeros(10)
    for _ in range(2000):
        batch = buf.sample(4, pad_id=0)
        rows = batch["labels"][:, 1].tolist()
        assert len(set(rows)) == 4  # no example twice while the buffer has enough
        for r in rows:
            counts[r] += 1
    stat = float(((counts - 800) ** 2 / 800).sum())
    assert chi2.sf(stat, 9) > 1e-3, counts.tolist()
    a, b, c = filled(3), filled(3), filled(4)
    sa, sb, sc = (x.sample(4, 0)["input_ids"] for x in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


def test_replay_never_contains_the_batch_being_learned(setting, tmp_path, monkeypatch):
    """During task 2 the buffer (hence every replay batch) holds none of the examples of the current step."""
    seen = []
    orig = METHODS["ilora"].loss

    def spy(self, batch, task_ids):
        held = {tuple(ids) for ids, _, _ in self.buffer.items}
        seen.append((task_ids, len(held), sum(tuple(e.input_ids) in held for e in batch["examples"])))
        return orig(self, batch, task_ids)

    monkeypatch.setattr(METHODS["ilora"], "loss", spy)
    train(_cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:2], method_args={"buffer_size": 64}),
          progress_bar=False)
    task2 = [s for s in seen if s[0] == [1]]
    assert task2 and all(held > 0 for _, held, _ in task2)  # replay is active
    assert all(overlap == 0 for _, _, overlap in task2)
    assert task2[-1][1] > task2[0][1]  # the buffer grew with earlier steps of task 2


def test_ilora_resume_in_task_two_with_replay_is_bit_identical(setting, tmp_path):
    from test_train import _tensors
    from mcl.train.loop import _Stop, resolve_run_dir

    kw = {"tasks": setting["tasks"][:2], "train.steps_per_task": 6,
          "method_args": {"buffer_size": 16, "update_prob": 0.5, "ema_lambda": 0.9}}
    full = train(_cfg(setting, tmp_path / "a", "ilora", **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", "ilora", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 4))  # killed in task 2, replay and consistency active
    progress = json.loads((resolve_run_dir(cfg) / "state" / "progress.json").read_text())
    assert progress == {"phase": 1, "step": 4, "phases_done": 1, "processes": 1}
    resumed = train(cfg, progress_bar=False)
    a, b = _tensors(full), _tensors(resumed)
    assert {k.split("/")[-1] for k in a} == {"fast", "slow"}
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    for f in ("R_loss.csv", "R_loss_fast.csv"):
        assert (full / "metrics" / f).read_text() == (resumed / "metrics" / f).read_text()


def test_snapshots_every_n_steps_trace_fast_and_slow(setting, tmp_path):
    from mcl.adapters import read_adapter

    cfg = _cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:2], **{"text.separator": " "},
               method_args={"buffer_size": 16, "snapshot_every": 2, "ema_lambda": 0.75})
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
    from mcl.cli.main import main  # the loss plane through fast(0), fast(1), slow(1) with task 1's trajectories

    tasks = run_dir / "tasks"
    out = tmp_path / "plane"
    assert main(["plane", str(tasks / "0-first" / "fast"), str(tasks / "1-last" / "fast"), str(tasks / "1-last" / "slow"),
                 "--snapshots", str(tasks / "1-last"), "--snapshots-start", str(tasks / "0-first"), "--grid", "2",
                 "--quiet", "--no-cache", "--out", str(out)]) == 0
    info = json.loads((out / "plane.json").read_text())
    assert set(info["trajectories"]) == {"fast", "slow"} and info["trajectories"]["slow"]["step"] == [0, 2, 4]
    fast = info["trajectories"]["fast"]
    assert (fast["x"][0], fast["y"][0]) == pytest.approx(tuple(info["anchors"]["a"]), abs=1e-4)  # fast starts at a
    end = info["trajectories"]["slow"]
    assert (end["x"][-1], end["y"][-1]) == pytest.approx(tuple(info["anchors"]["c"]), abs=1e-4)  # the final slow is c
    assert abs(end["off_plane"][-1]) < 1e-3
    assert main(["plane", str(tasks / "0-first" / "fast"), str(tasks / "1-last" / "fast"), str(tasks / "1-last" / "slow"),
                 "--snapshots", str(tasks / "0-first" / "fast"), "--grid", "2", "--quiet", "--out", str(tmp_path / "x")]) == 2


def test_snapshots_off_by_default_and_not_pinned(setting, tmp_path):
    run_dir = train(_cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:1], method_args={"buffer_size": 16}),
                    progress_bar=False)
    assert not (run_dir / "tasks" / "0-first" / "snapshots").exists()
    assert "snapshot_every" not in json.loads((run_dir / "method.json").read_text())["args"]
    assert "text" not in json.loads((run_dir / "tasks" / "0-first" / "slow" / "mcl.json").read_text())


@pytest.mark.parametrize("steps, expected", [(100, 0.9), (40, 0.75), (10, 0.0), (4, 0.0)])
def test_default_lambda_follows_the_run_and_a_slower_explicit_one_is_warned(setting, capsys, steps, expected):
    from types import SimpleNamespace

    cfg = _cfg(setting, setting["root"] / "unused", **{"train.steps_per_task": steps})
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=cfg, tasks=["a", "b"],
                  train_data=[SimpleNamespace(train=[0] * 48)] * 2)
    method = METHODS["ilora"](ctx)
    assert method.args["ema_lambda"] == pytest.approx(expected)  # window 1/(1-λ) = 10 % of the task's steps
    assert f"ema_lambda auto = {expected:.4g}" in capsys.readouterr().out
    METHODS["ilora"](ctx, ema_lambda=0.99)  # a 100-step window
    out = capsys.readouterr().out
    assert ("warning: ilora ema_lambda 0.99 averages over 100 steps" in out) == (steps < 1000)
    METHODS["ilora"](ctx, ema_lambda=expected)  # at the rule: no warning
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("target", ["max", "slow"])
def test_logit_consistency_is_the_masked_mse_of_both_learners_logits_at_labelled_positions(setting, target):
    from mcl.train.losses import to_device

    method, tok, data = _method_with_data(setting, consistency_on="logits", consistency_target=target)
    assert "consistency_on" in method.args  # not the default: pinned in method.json
    replay = to_device(_batch(method, data, 0, 0), "cpu")
    peft = method.ctx.peft
    fast = answer_ce(peft, replay)[2].logits  # one row per labelled position, as the replay CE computes them
    got = method.logit_consistency(fast, replay)
    from mcl.train.methods.base import active_adapter

    with torch.no_grad(), active_adapter(peft, "slow"):  # by hand: full logits, then the labelled positions
        slow_full = peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"]).logits
    fast_full = peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"]).logits
    lab = replay["labels"][:, 1:] != -100
    d = fast_full[:, :-1][lab] - slow_full[:, :-1][lab]
    d = d.clamp(max=0) if target == "max" else d
    expected = (d ** 2).mean()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7) and got > 0
    got.backward()  # the gradient reaches the fast learner only
    assert all(p.grad is None for p in lora_parameters(peft, "slow").values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(peft, "fast").values())


def test_default_consistency_on_is_left_out_of_the_pinned_arguments(setting):
    method, _ = _method(setting)
    assert "consistency_on" not in method.args and method.consistency_on == "hidden"


def test_as_released_keeps_the_slow_learner_at_the_base_model(setting, tmp_path):
    run_dir = train(_cfg(setting, tmp_path, "ilora-as-released", tasks=setting["tasks"][:2],
                         method_args={"buffer_size": 16}), progress_bar=False)
    for d in _adapter_dirs(run_dir):
        t = load_file(d / "adapter_model.safetensors")
        zero_b = all(float(v.abs().sum()) == 0 for k, v in t.items() if "lora_B" in k)
        assert zero_b == (d.name == "slow"), d  # slow: ΔW = 0 after every task; fast: trained
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    assert summary["primary_view"] == "fast"


def test_constant_schedule_keeps_the_peak_after_warm_up(setting, tmp_path):
    import pandas as pd

    from mcl.train.loop import lr_factor

    assert [lr_factor(s, 10, 2, "constant") for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(9, 10, 2) < 0.2  # cosine ends near 10 %
    run_dir = train(_cfg(setting, tmp_path, "seq", tasks=setting["tasks"][:1],
                         **{"train.lr_schedule": "constant", "train.log_every": 1, "train.warmup": 2}), progress_bar=False)
    log = pd.read_csv(run_dir / "metrics" / "train_log.csv")
    assert list(log.lr) == pytest.approx([2.5e-3, 5e-3, 5e-3, 5e-3])  # warm-up 2, lr 5e-3


def test_placement_search_places_the_slow_learner_at_the_path_minimum_and_resumes_exactly(setting, tmp_path):
    from mcl.paths import lerp_states_
    from mcl.train.loop import _Stop, resolve_run_dir
    from test_train import _tensors

    kw = {"method_args": {"buffer_size": 16, "placement": "search", "snapshot_every": 2},
          "train.steps_per_task": 4, "tasks": setting["tasks"][:2]}
    run_dir = train(_cfg(setting, tmp_path / "a", "ilora", **kw), progress_bar=False)
    tasks = sorted((run_dir / "tasks").iterdir())
    rec = json.loads((run_dir / "metrics" / "placement-1.json").read_text())
    assert 0.0 <= rec["t"] <= 1.0 and len(rec["evaluations"]) >= 6  # 5 grid points + Brent
    assert rec["objective"] == min(e["objective"] for e in rec["evaluations"])
    slow0, slow1, fast1 = (load_file(tasks[k] / n / "adapter_model.safetensors")
                           for k, n in ((0, "slow"), (1, "slow"), (1, "fast")))
    for snap in sorted((tasks[1] / "snapshots").iterdir()):  # fixed during the task
        s = load_file(snap / "slow" / "adapter_model.safetensors")
        assert all(torch.equal(s[k], slow0[k]) for k in slow0)
    keys = sorted(slow0)
    placed = [slow0[k].clone() for k in keys]
    lerp_states_(placed, [fast1[k] for k in keys], rec["t"])
    assert all(torch.equal(p, slow1[k]) for p, k in zip(placed, keys))  # exactly the point t of slow(0) → fast(1)
    cfg = _cfg(setting, tmp_path / "b", "ilora", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 2))  # killed in task 2
    resumed = train(cfg, progress_bar=False)
    a, b = _tensors(run_dir), _tensors(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])
    assert json.loads((resolve_run_dir(cfg) / "metrics" / "placement-1.json").read_text()) == rec


def test_placement_holds_out_a_seeded_slice_of_each_train_split(setting):
    from types import SimpleNamespace

    from mcl.train.methods.ilora import ILoRA

    cfg = _cfg(setting, setting["root"] / "unused")
    data = [SimpleNamespace(train=list(range(40))), SimpleNamespace(train=list(range(30)))]
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=cfg, tasks=["a", "b"],
                  train_data=data)
    held = ILoRA.hold_out(ctx, 0.1)
    assert [len(h) for h in held.values()] == [4, 3] and [len(d.train) for d in data] == [36, 27]
    for d, h, n in zip(data, held.values(), (40, 30)):
        assert sorted(d.train + h) == list(range(n)) and not set(d.train) & set(h)  # never trained on
    again = [SimpleNamespace(train=list(range(40))), SimpleNamespace(train=list(range(30)))]
    assert ILoRA.hold_out(Context(model=None, tokenizer=None, accelerator=ctx.accelerator, config=cfg, tasks=["a", "b"],
                                  train_data=again), 0.1) == held  # seeded: the same slice on resume
