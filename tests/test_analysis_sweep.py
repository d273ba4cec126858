"""Sweeps equal a hand-written torch + peft loop; the cache; barrier matrix; plane geometry; plots."""

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import AdapterState, read_adapter
from mcl.analysis import (PointCache, barrier_matrix, evaluators, path_barriers, plane, plot_barrier_matrix, plot_path,
                          plot_plane, project, sweep)
from mcl.data.load import load_task
from mcl.paths import Bezier, Linear, get_space

WORDS = "red green blue cat dog fish one two three sun moon star".split()


def make_task(root, name, fn, n=8):
    rng = random.Random(name)
    d = root / name
    d.mkdir()
    for split in ("train", "eval"):
        rows = [{"prompt": f"{name}: {' '.join(w)} ->", "answer": fn(w)}
                for w in ([rng.choice(WORDS) for _ in range(rng.randint(2, 5))] for _ in range(n))]
        (d / f"{split}.json").write_text(json.dumps(rows))
    (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 3}))
    return d


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("sweep")
    tasks = [make_task(root, "first", lambda w: w[0]), make_task(root, "count", lambda w: str(len(w)))]
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3, vocab_size=200)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    adapters = []
    for seed in (1, 2, 3):
        model = get_peft_model(base(root), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.save_pretrained(root / f"ad{seed}")
        adapters.append(read_adapter(root / f"ad{seed}"))
    return {"root": root, "tok": tok, "tasks": [load_task(t) for t in tasks], "adapters": adapters}


def base(root):
    return LlamaForCausalLM.from_pretrained(root / "base").eval()


def hand_loss(model, tok, examples):
    """Token-pooled answer CE by the convention, one example at a time, full logits."""
    total, count = 0.0, 0
    for e in examples:
        p = tok(e.prompt, add_special_tokens=False)["input_ids"]
        a = tok(e.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([[tok.bos_token_id] + p + a])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        start = 1 + len(p)
        total += F.cross_entropy(logits[start - 1:-1], ids[0, start:], reduction="sum").item()
        count += len(a)
    return total / count


def factor_model(root, a, b, t):
    model = get_peft_model(base(root), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    sa, sb = load_file(a.path + "/adapter_model.safetensors"), load_file(b.path + "/adapter_model.safetensors")
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, {k: (1 - t) * sa[k] + t * sb[k] for k in sa})
    return model.eval()


def delta_model(root, a, b, t):
    wa = PeftModel.from_pretrained(base(root), a.path).merge_and_unload().state_dict()
    wb = PeftModel.from_pretrained(base(root), b.path).merge_and_unload().state_dict()
    model = base(root)
    model.load_state_dict({k: (1 - t) * wa[k] + t * wb[k] for k in wa})
    return model


@pytest.mark.parametrize("space,reference", [("factors", factor_model), ("delta", delta_model), ("merged", delta_model)])
def test_sweep_equals_hand_written_loop(setting, space, reference):
    a, b = setting["adapters"][:2]
    tasks = evaluators(setting["tok"], setting["tasks"], batch_size=3)
    frame = sweep(Linear(a, b, space=space), base(setting["root"]), tasks, points=4, cache=False, progress=False)
    assert list(frame.columns[:8]) == ["t", "path", "space", "task", "loss", "metric", "metric_name", "higher_is_better"]
    assert len(frame) == 8 and set(frame.space) == {space} and set(frame.path) == {"linear"}
    for row in frame.itertuples():
        task = next(t for t in setting["tasks"] if t.name == row.task)
        want = hand_loss(reference(setting["root"], a, b, row.t), setting["tok"], task.split("eval"))
        assert row.loss == pytest.approx(want, abs=1e-5, rel=1e-5)


def test_repeated_or_extended_sweep_recomputes_only_missing_points(setting, tmp_path):
    a, b = setting["adapters"][:2]
    tasks = evaluators(setting["tok"], setting["tasks"])
    cache = PointCache(tmp_path / "cache")
    model = base(setting["root"])
    first = sweep(Linear(a, b), model, tasks, points=[0.0, 1.0], cache=cache, progress=False)
    assert first.attrs["computed"] == 4
    second = sweep(Linear(a, b), model, tasks, points=3, cache=cache, progress=False)
    assert second.attrs["computed"] == 2 and second.cached.tolist() == [True, True, False, False, True, True]
    third = sweep(Linear(a, b), model, tasks, points=3, cache=cache, progress=False)
    assert third.attrs["computed"] == 0
    assert third.loss.tolist() == second.loss.tolist()
    assert sweep(Linear(a, b, space="delta"), model, tasks, points=3, cache=cache, progress=False).attrs["computed"] == 6
    with_metric = sweep(Linear(a, b), model, tasks, points=3, metric=True, cache=cache, progress=False)
    assert with_metric.attrs["computed"] == 6 and with_metric.metric.between(0, 1).all()
    assert sweep(Linear(a, b), model, tasks, points=3, cache=cache, progress=False).attrs["computed"] == 0


def test_path_barriers_schema(setting):
    a, b = setting["adapters"][:2]
    tasks = evaluators(setting["tok"], setting["tasks"])
    frame = sweep(Linear(a, b), base(setting["root"]), tasks, points=3, metric=True, cache=False, progress=False)
    result = path_barriers(frame)
    assert set(result) == {"first", "count"}
    r = result["first"]
    assert len(r["loss"]) == len(r["metric"]) == 3 and r["metric_name"] == "accuracy"
    assert set(r["barrier"]["loss"]) == set(r["barrier"]["metric"]) == {"max_minus_linear", "max_minus_mean", "integral", "argmax_t"}


def test_barrier_matrix_is_symmetric_and_matches_single_sweeps(setting, tmp_path):
    ads = setting["adapters"]
    tasks = evaluators(setting["tok"], setting["tasks"][:1])
    model = base(setting["root"])
    bm = barrier_matrix(ads, model, tasks, points=3, labels=["x", "y", "z"], cache=False, progress=False)
    assert len(bm.barriers) == 3 and set(bm.barriers.measure) == {"loss"}
    m = bm.matrix("first")
    assert np.allclose(m.values, m.values.T) and np.all(np.diag(m.values) == 0)
    single = path_barriers(sweep(Linear(ads[0], ads[2]), model, tasks, points=3, cache=False, progress=False))
    assert m.loc["x", "z"] == pytest.approx(single["first"]["barrier"]["loss"]["max_minus_linear"])
    plot_barrier_matrix(bm, tmp_path / "m.png", tmp_path / "m.html")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG" and 'class="mcl-figure"' in (tmp_path / "m.html").read_text()


def test_plane_grid_points_are_the_gram_schmidt_plane(setting, tmp_path):
    a, b, c = setting["adapters"]
    tasks = evaluators(setting["tok"], setting["tasks"][:1])
    pl = plane(a, b, c, base(setting["root"]), tasks, grid=3, margin=0.1, path=Bezier(a, c, b), cache=False, progress=False)
    assert len(pl.frame) == 9
    flat = {n: torch.cat([s.tensors[k].flatten() for k in sorted(s.tensors)]).double() for n, s in zip("abc", (a, b, c))}
    u = flat["b"] - flat["a"]
    u_hat = u / u.norm()
    w = flat["c"] - flat["a"]
    v = w - (w @ u_hat) * u_hat
    v_hat = v / v.norm()
    assert pl.anchors["b"] == pytest.approx((u.norm().item(), 0.0))
    assert pl.anchors["c"] == pytest.approx(((w @ u_hat).item(), v.norm().item()))
    space = get_space("factors")
    for row in pl.frame.itertuples():
        point = space.combine([a, b, c], [row.w_a, row.w_b, row.w_c])
        got = torch.cat([point.tensors[k].flatten() for k in sorted(point.tensors)]).double()
        torch.testing.assert_close(got, flat["a"] + row.x * u_hat + row.y * v_hat, atol=1e-5, rtol=1e-5)
    ends = pl.curve.iloc[[0, -1]][["x", "y"]].to_numpy()
    np.testing.assert_allclose(ends, [pl.anchors["a"], pl.anchors["b"]], atol=1e-6)
    plot_plane(pl, tmp_path / "p.png", tmp_path / "p.html")
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "p.html").stat().st_size > 1000


def test_trajectories_project_onto_the_plane_with_their_distance_from_it(setting, tmp_path):
    a, b, c = setting["adapters"]
    space = get_space("factors")
    mid = space.combine([a, b, c], [0.25, 0.5, 0.25])  # on the plane
    keys = sorted(a.tensors)
    off = AdapterState(dict(a.config), {k: t.clone() for k, t in mid.tensors.items()})
    flat = {n: torch.cat([s.tensors[k].flatten() for k in keys]).double() for n, s in zip("abc", (a, b, c))}
    basis_q, _ = torch.linalg.qr(torch.stack([flat["b"] - flat["a"], flat["c"] - flat["a"]], 1))
    normal = torch.randn_like(flat["a"])
    normal -= basis_q @ (basis_q.T @ normal)
    normal = 0.3 * normal / normal.norm()  # a step of length 0.3 out of the plane
    pos = 0
    for k in keys:
        n = off.tensors[k].numel()
        off.tensors[k] += normal[pos:pos + n].view_as(off.tensors[k]).to(off.tensors[k].dtype)
        pos += n
    got = project([a, b, c, mid, off], a, b, c, space, steps=[0, 1, 2, 3, 4])
    pl = plane(a, b, c, base(setting["root"]), evaluators(setting["tok"], setting["tasks"][:1]), grid=2, cache=False,
               progress=False, trajectories={"learner": ([3, 4], [mid, off])})
    anchors = np.array([pl.anchors[n] for n in "abc"])
    np.testing.assert_allclose(got[["x", "y"]].to_numpy()[:3], anchors, atol=1e-5)
    np.testing.assert_allclose(got[["x", "y"]].to_numpy()[3], 0.25 * anchors[0] + 0.5 * anchors[1] + 0.25 * anchors[2],
                               atol=1e-5)
    np.testing.assert_allclose(got[["x", "y"]].to_numpy()[4], got[["x", "y"]].to_numpy()[3], atol=1e-4)
    np.testing.assert_allclose(got["off_plane"].to_numpy(), [0, 0, 0, 0, 0.3], atol=2e-3)
    assert list(pl.trajectories["learner"]["step"]) == [3, 4]
    fig = plot_plane(pl, tmp_path / "p.png", tmp_path / "p.html")
    assert fig.axes[0].get_legend() is not None and "learner" in (tmp_path / "p.html").read_text()


def test_plot_path_writes_png_and_html(setting, tmp_path):
    a, b = setting["adapters"][:2]
    tasks = evaluators(setting["tok"], setting["tasks"])
    frame = sweep(Linear(a, b), base(setting["root"]), tasks, points=3, metric=True, cache=False, progress=False)
    plot_path(frame, tmp_path / "path.png", tmp_path / "path.html", title="a → b")
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"
    assert "first" in (tmp_path / "path.html").read_text()
    assert not list(tmp_path.glob(".*tmp"))
