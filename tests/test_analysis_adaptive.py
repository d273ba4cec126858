"""Adaptive barrier search: the peak refinement on known curves, and `sweep(points="auto")` on a tiny model."""

import json
import random

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import AdapterState, read_adapter, write_adapter_dir
from mcl.analysis import AdaptiveSearch, PointCache, barriers, evaluators, path_barriers, refine_peak, sweep
from mcl.cli.barrier_cmd import main
from mcl.errors import MclError
from mcl.paths import Linear
from mcl.paths.lora_math import delta_weight, lora_terms

WORDS = "red green blue cat dog fish one two three sun moon star".split()


def dense_barrier(f, n=101):
    t = np.linspace(0, 1, n)
    return barriers(t, [f(x) for x in t])["max_minus_linear"]


def refined_barrier(f, search=AdaptiveSearch()):
    t = np.linspace(0, 1, search.coarse)
    v = [f(x) for x in t]
    new = refine_peak(f, t, v, search.max_points - search.coarse, search.xtol)
    ts = np.array(sorted({*t, *new}))
    return barriers(ts, [f(x) for x in ts])["max_minus_linear"], len(ts), new


@pytest.mark.parametrize("center,width", [(0.37, 0.05), (0.55, 0.08), (0.81, 0.04), (0.12, 0.06)])
def test_sharp_off_grid_peak_within_2_percent_of_101_points_in_15(center, width):
    def f(x):
        return 1.0 + 0.5 * x + 9.0 * np.exp(-(((x - center) / width) ** 2))

    ref = dense_barrier(f)
    got, evaluated, _ = refined_barrier(f)
    assert evaluated <= 15
    assert got >= 0.98 * ref
    coarse = barriers(np.linspace(0, 1, 7), [f(x) for x in np.linspace(0, 1, 7)])["max_minus_linear"]
    assert got > coarse  # the refinement found more than the coarse grid


def test_curve_below_its_chord_needs_no_refinement():
    calls = []
    got, evaluated, new = refined_barrier(lambda x: calls.append(x) or (x - 0.5) ** 2)
    assert new == {} and evaluated == 7 and got == 0.0


def test_refinement_respects_the_budget():
    t = np.linspace(0, 1, 5)
    f = np.sin  # peak above the chord away from the grid
    new = refine_peak(lambda x: float(np.sin(3 * x)), t, [np.sin(3 * x) for x in t], budget=3, xtol=1e-9)
    assert 1 <= len(new) <= 3 and f is np.sin


@pytest.mark.parametrize("kwargs", [{"coarse": 2}, {"coarse": 9, "max_points": 8}, {"xtol": 0.0}])
def test_bad_search_settings_are_one_line_errors(kwargs):
    with pytest.raises(MclError):
        AdaptiveSearch(**kwargs)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("adaptive")
    rng = random.Random(0)
    rows = {s: [{"prompt": " ".join(rng.choice(WORDS) for _ in range(4)) + " ->", "answer": rng.choice(WORDS)}
                for _ in range(6)] for s in ("train", "eval")}
    (root / "pick").mkdir()
    (root / "pick" / "task.json").write_text(json.dumps({"metric": "accuracy"}))
    for split, r in rows.items():
        (root / "pick" / f"{split}.json").write_text(json.dumps(r))
    tok = train_tokenizer([json.dumps(rows)] * 5, vocab_size=200)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(root / "base"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.save_pretrained(root / "a")
    return {"root": root, "tok": tok, "a": read_adapter(root / "a"), "task": str(root / "pick")}


def scaled_twin(state, scale):
    """(−scale·A, −B/scale): the same ΔW in every module, other factors."""
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        tensors[term.a_key] = -scale * state.tensors[term.a_key]
        tensors[term.b_key] = -state.tensors[term.b_key] / scale
    return AdapterState(dict(state.config), tensors)


def test_twin_has_the_same_delta_and_auto_sweep_finds_its_barrier(setting, tmp_path):
    a = setting["a"]
    b = scaled_twin(a, 3.0)
    for term in lora_terms(a, "delta"):
        torch.testing.assert_close(delta_weight(a, term), delta_weight(b, term))
    model = LlamaForCausalLM.from_pretrained(setting["root"] / "base")
    tasks = evaluators(setting["tok"], [setting["task"]])
    path = Linear(a, b, space="factors")
    ref = path_barriers(sweep(path, model, tasks, 101, cache=False, progress=False))["pick"]
    cache = PointCache(tmp_path / "cache")
    frame = sweep(path, model, tasks, "auto", cache=cache, progress=False)
    got = path_barriers(frame)["pick"]
    assert ref["barrier"]["loss"]["max_minus_linear"] > 0.02  # a real barrier to find
    assert len(got["t"]) <= 15 and got["t"][0] == 0.0 and got["t"][-1] == 1.0
    assert got["barrier"]["loss"]["max_minus_linear"] >= 0.98 * ref["barrier"]["loss"]["max_minus_linear"]
    coarse = path_barriers(sweep(path, model, tasks, 7, cache=False, progress=False))["pick"]
    assert got["loss"][:: len(got["t"]) - 1] == coarse["loss"][::6]  # endpoints: the same numbers
    again = sweep(path, model, tasks, "auto", cache=cache, progress=False)
    assert again.attrs["computed"] == 0 and again["loss"].tolist() == frame["loss"].tolist()


def test_cli_points_auto_and_ci_record_the_search_and_intervals(setting, tmp_path, capsys):
    b = tmp_path / "b"
    twin = scaled_twin(setting["a"], 3.0)
    write_adapter_dir(twin, b)
    out = tmp_path / "out"
    rc = main([str(setting["root"] / "a"), str(b), "--base", str(setting["root"] / "base"), "--data", setting["task"],
               "--points", "auto", "--ci", "0.9", "--merge", "--align", "svd", "--attribute", "layers", "--quiet", "--no-cache", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "barrier.json").read_text())
    ci = result["tasks"]["pick"]["ci"]
    low, high = ci["loss"]["max_minus_linear"]
    assert ci["level"] == 0.9 and low <= high and len(ci["band"]) == len(result["points"])
    csv = (out / "path.csv").read_text().splitlines()[0].split(",")
    assert "loss_low" in csv and "example_sums" not in csv
    assert result["align"] == "svd" and {r["group"] for r in result["attribution"]["rows"]} == {"layer 0", "layer 1"}
    assert (out / "attribution.png").read_bytes()[:4] == b"\x89PNG"
    assert result["tasks"]["pick"]["barrier"]["loss"]["max_minus_linear"] < 1e-4  # aligned gauge twins: no barrier
    assert result["adaptive"]["max_points"] == 15 and result["adaptive"]["evaluated"]["pick"] <= 15
    assert result["tasks"]["pick"]["t"] == result["points"]
    assert "adaptive search" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([str(setting["root"] / "a"), str(b), "--points", "many", "--quiet"])
    assert exc.value.code == 2
