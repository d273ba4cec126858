"""`mcl-barrier` on adapters written by plain peft: the barrier.json schema, outputs, and bad input → exit 2."""

import json
import random
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.cli.barrier_cmd import main
from mcl.cli.main import main as mcl_main

WORDS = "red green blue cat dog fish one two three sun moon star".split()
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def make_task(root, name, fn, n=6):
    rng = random.Random(name)
    d = root / name
    d.mkdir()
    for split in ("train", "eval", "test"):
        rows = [{"prompt": f"{name}: {' '.join(w)} ->", "answer": fn(w)}
                for w in ([rng.choice(WORDS) for _ in range(rng.randint(2, 4))] for _ in range(n))]
        (d / f"{split}.json").write_text(json.dumps(rows))
    (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 2}))
    return str(d)


def tiny_config(vocab, hidden=32):
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0,
                       eos_token_id=1, pad_token_id=2)


def write_adapter(out, base_model, seed=1, **lora):
    model = get_peft_model(base_model, LoraConfig(**{**LORA, **lora}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("cli")
    tasks = [make_task(root, "first", lambda w: w[0]), make_task(root, "last", lambda w: w[-1])]
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3, vocab_size=200)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(tok))).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")

    def base():
        return LlamaForCausalLM.from_pretrained(root / "base")

    return {"root": root, "tasks": tasks, "base": str(root / "base"), "make_base": base,
            "a": write_adapter(root / "a", base(), 1), "b": write_adapter(root / "b", base(), 2)}


def test_barrier_json_schema_and_outputs(setting, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([setting["a"], setting["b"], "--data", *setting["tasks"], "--points", "3", "--metric", "--quiet",
               "--no-cache", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "barrier.json").read_text())
    assert {"a", "b", "path", "space", "points", "tasks"} <= set(result)
    assert result["path"] == "linear" and result["space"] == "factors" and result["points"] == [0.0, 0.5, 1.0]
    assert result["base"] == setting["base"]  # read from the plain-peft adapter config
    for task in ("first", "last"):
        r = result["tasks"][task]
        assert len(r["loss"]) == 3 and len(r["metric"]) == 3 and r["metric_name"] == "accuracy"
        assert set(r["barrier"]["loss"]) == {"max_minus_linear", "max_minus_mean", "integral", "argmax_t"}
        assert set(r["barrier"]["metric"]) == set(r["barrier"]["loss"])
    header = (out / "path.csv").read_text().splitlines()[0].split(",")
    assert {"t", "task", "loss", "metric", "metric_name", "path", "space"} <= set(header)
    assert (out / "path.png").read_bytes()[:4] == b"\x89PNG"
    assert 'class="mcl-figure"' in (out / "path.html").read_text()  # figure JSON drawn by the embedded plotly.js
    table = capsys.readouterr().out
    assert "max_minus_linear" in table and "first" in table and "last" in table


def test_mcl_barrier_subcommand_delta_space_test_split_with_base(setting, tmp_path, capsys):
    rc = mcl_main(["barrier", setting["a"], setting["b"], "--base", setting["base"], "--data", setting["tasks"][0],
                   "--space", "delta", "--split", "test", "--points", "2", "--quiet", "--no-cache"])
    assert rc == 0
    assert "linear path in delta space, 2 points, test split" in capsys.readouterr().out


def test_tasks_default_to_the_checkpoints_sidecars(setting, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for src, dst, task in ((setting["a"], a, setting["tasks"][0]), (setting["b"], b, setting["tasks"][1])):
        shutil.copytree(src, dst)
        (dst / "mcl.json").write_text(json.dumps({"task": task}))
    assert main([str(a), str(b), "--points", "2", "--quiet", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "first" in out and "last" in out


def _variant(setting, tmp_path, kind):
    """Second adapter that differs from `a` in one field (or is broken in one way)."""
    base = setting["make_base"]()
    variants = {
        "r": lambda: write_adapter(tmp_path / "v", base, r=8),
        "lora_alpha": lambda: write_adapter(tmp_path / "v", base, lora_alpha=16),
        "use_rslora": lambda: write_adapter(tmp_path / "v", base, use_rslora=True),
        "use_dora": lambda: write_adapter(tmp_path / "v", base, use_dora=True),
        "target_modules": lambda: write_adapter(tmp_path / "v", base, target_modules=["q_proj", "k_proj"]),
        "rank_pattern": lambda: write_adapter(tmp_path / "v", base, rank_pattern={"q_proj": 2}),
        "delta_shapes": lambda: write_adapter(tmp_path / "v", LlamaForCausalLM(tiny_config(200, hidden=48))),
    }
    if kind == "base_model":
        shutil.copytree(setting["b"], tmp_path / "v")
        (tmp_path / "v" / "mcl.json").write_text(json.dumps({"base_model": "smollm2"}))
        return str(tmp_path / "v")
    return variants[kind]()


@pytest.mark.parametrize("field,space", [
    ("r", "factors"), ("lora_alpha", "factors"), ("use_rslora", "factors"), ("use_dora", "delta"),
    ("target_modules", "factors"), ("rank_pattern", "factors"), ("base_model", "delta"), ("delta_shapes", "delta"),
])
def test_incompatible_adapters_name_the_field(setting, tmp_path, capsys, field, space):
    other = _variant(setting, tmp_path, field)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main([setting["a"], other, "--data", setting["tasks"][0], "--space", space, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and f"{field} differs" in err
    assert not (out / "barrier.json").exists()


def _nan_adapter(setting, tmp_path):
    shutil.copytree(setting["b"], tmp_path / "nan")
    f = tmp_path / "nan" / "adapter_model.safetensors"
    tensors = load_file(f)
    key = sorted(tensors)[0]
    tensors[key][0, 0] = float("nan")
    save_file(tensors, f)
    return str(tmp_path / "nan")


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"),
    ("points1", "at least 2 points"),
    ("unknown_path", "unknown path 'spline'"),
    ("unknown_space", "unknown interpolation space 'weights'"),
    ("nan", "NaN or Inf"),
    ("bezier_without_controls", "needs control points"),
    ("no_tasks", "no tasks to evaluate"),
    ("no_base", "pass --model"),
])
def test_bad_input_is_one_line_exit_2_and_no_complete_output(setting, tmp_path, capsys, case, match):
    out = tmp_path / "out"
    a, b, data = setting["a"], setting["b"], ["--data", setting["tasks"][0]]
    extra = {
        "missing": lambda: [a, str(tmp_path / "nope"), *data],
        "points1": lambda: [a, b, *data, "--points", "1"],
        "unknown_path": lambda: [a, b, *data, "--path", "spline"],
        "unknown_space": lambda: [a, b, *data, "--space", "weights"],
        "nan": lambda: [a, _nan_adapter(setting, tmp_path), *data],
        "bezier_without_controls": lambda: [a, b, *data, "--path", "bezier"],
        "no_tasks": lambda: [a, b],
        "no_base": lambda: [write_adapter(tmp_path / "x", LlamaForCausalLM(tiny_config(200))),
                            write_adapter(tmp_path / "y", LlamaForCausalLM(tiny_config(200)), seed=2), *data],
    }[case]()
    capsys.readouterr()
    rc = main([*extra, "--out", str(out), "--quiet", "--no-cache"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and match in err, err
    assert not (out / "barrier.json").exists()


def test_chain_and_pairs_file_sweep_every_pair_in_one_process(setting, tmp_path, monkeypatch, capsys):
    import mcl.models

    c = write_adapter(tmp_path / "c", setting["make_base"](), 3)
    loads = []
    real_load = mcl.models.load_base
    monkeypatch.setattr(mcl.models, "load_base", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    common = ["--data", setting["tasks"][0], "--points", "3", "--quiet", "--no-cache"]
    chain = tmp_path / "chain"
    assert main([setting["a"], setting["b"], c, *common, "--out", str(chain)]) == 0
    assert len(loads) == 1  # one base model for both pairs
    index = json.loads((chain / "pairs.json").read_text())["pairs"]
    assert [(p["a"], p["b"], p["dir"]) for p in index] == [(setting["a"], setting["b"], "0_a--b"),
                                                           (setting["b"], c, "1_b--c")]
    first = json.loads((chain / "0_a--b" / "barrier.json").read_text())
    second = json.loads((chain / "1_b--c" / "barrier.json").read_text())
    assert (first["a"], first["b"], second["a"], second["b"]) == (setting["a"], setting["b"], setting["b"], c)
    assert (chain / "1_b--c" / "path.png").is_file() and "== pair 1:" in capsys.readouterr().out
    listed = tmp_path / "pairs.txt"
    listed.write_text(f"# from the chain\n{setting['a']} {setting['b']}\n\n  '{setting['b']}'   {c}\n")
    assert main(["--pairs", str(listed), *common, "--out", str(tmp_path / "listed")]) == 0
    again = json.loads((tmp_path / "listed" / "1_b--c" / "barrier.json").read_text())
    assert again["tasks"] == second["tasks"]  # the same pair gives the same numbers
    (chain / "7_mine--keep").mkdir()  # a user's dir that only looks like a pair's
    assert main([setting["a"], setting["b"], *common, "--out", str(chain)]) == 0  # one pair into the chain's dir
    assert sorted(p.name for p in chain.iterdir()) == ["7_mine--keep", "barrier.json", "path.csv", "path.html",
                                                       "path.png"]  # none of the chain's outputs


@pytest.mark.parametrize("argv,text,match", [
    (["{a}"], None, "give two checkpoints"),
    (["{a}", "{b}", "--pairs", "{f}"], "{a} {b}\n", "not both"),
    (["--pairs", "{f}"], "{a} {b} {a}\n", "line 1: expected two checkpoint dirs, got 3"),
    (["--pairs", "{f}"], "# nothing\n\n", "no pairs in it"),
    (["--pairs", "{f}"], "'{a} {b}\n", "line 1: No closing quotation"),
    (["--pairs", "{f}/nope"], None, "cannot read it"),
    (["{a}", "{b}", "{a}", "--path", "bezier", "--controls", "{b}"], None, "--controls belong to one pair"),
])
def test_bad_pairs_are_one_line_errors(setting, tmp_path, capsys, argv, text, match):
    f = tmp_path / "pairs.txt"
    if text is not None:
        f.write_text(text.format(a=setting["a"], b=setting["b"]))
    args = [x.format(a=setting["a"], b=setting["b"], f=f) for x in argv]
    capsys.readouterr()
    assert main([*args, "--data", setting["tasks"][0], "--quiet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err
    assert not (tmp_path / "out").exists()


def test_plotting_libraries_load_only_to_draw(setting, tmp_path, monkeypatch):
    import sys

    for blocked in ("mcl.analysis.plots", "matplotlib.figure", "plotly.graph_objects", "plotly.subplots"):
        monkeypatch.setitem(sys.modules, blocked, None)  # importing any of them now fails
    argv = [setting["a"], setting["b"], "--data", setting["tasks"][0], "--points", "2", "--quiet", "--no-cache"]
    assert main(argv) == 0
    with pytest.raises(ImportError):
        main([*argv, "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("space", ["factors", "delta"])
def test_merged_forwards_by_default_equal_peft_layers(setting, tmp_path, space):
    from mcl.cli.barrier_cmd import build_parser

    assert build_parser().parse_args(["A", "B"]).merge is True
    results = []
    for flag in ("--merge", "--no-merge"):
        out = tmp_path / flag
        assert main([setting["a"], setting["b"], "--data", *setting["tasks"], "--space", space, "--points", "4",
                     flag, "--quiet", "--no-cache", "--out", str(out)]) == 0
        results.append(json.loads((out / "barrier.json").read_text())["tasks"])
    merged, unmerged = results
    for task in merged:
        assert merged[task]["loss"] == pytest.approx(unmerged[task]["loss"], abs=1e-6)
        assert len(set(merged[task]["loss"])) == 4
