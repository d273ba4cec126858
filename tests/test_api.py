"""The top-level API: `mcl.train(...)`, `mcl.barrier(a, b, tasks=...)`, `mcl.plane(...)` mean what the CLI means,
print no warnings, and `import mcl` stays light."""

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import mcl
from mcl.cli.barrier_cmd import main as barrier_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-task seq run on a tiny random base, made through `mcl.train`."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("api")
    tasks = []
    for name, fn in (("first", lambda w: w[0]), ("last", lambda w: w[-1]), ("count", lambda w: str(len(w)))):
        rng, d = random.Random(name), root / name
        d.mkdir()
        for split, n in (("train", 16), ("eval", 4), ("test", 4)):
            rows = [{"prompt": f"{name}: {' '.join(w)} ->", "answer": fn(w)}
                    for w in ([rng.choice("ab cd ef".split()) for _ in range(rng.randint(2, 4))] for _ in range(n))]
            (d / f"{split}.json").write_text(json.dumps(rows))
        (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 2}))
        tasks.append(str(d))
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3, vocab_size=120)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = mcl.train(None, "train.steps_per_task=3", "eval.generate=false", "learning_rate=5e-3",
                            model=str(root / "base"), tasks=tasks, runs_dir=str(root / "runs"), progress=False)
    return {"dir": run_dir, "warnings": [str(w.message) for w in caught]}


def test_train_makes_the_run_the_cli_would(run):
    assert run["warnings"] == []
    assert run["dir"].name.startswith("run-seq-") and (run["dir"] / "metrics" / "summary.json").is_file()


def test_barrier_equals_mcl_barrier_and_prints_no_warning(run, tmp_path, capfd):
    a, b = sorted((run["dir"] / "tasks").iterdir())[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = mcl.barrier(a, b, points=3)
    assert [str(w.message) for w in caught] == [] and "Warning" not in capfd.readouterr().err
    assert barrier_main([str(a), str(b), "--points", "3", "--out", str(tmp_path / "cli"), "--quiet", "--no-cache"]) == 0
    cli = json.loads((tmp_path / "cli" / "barrier.json").read_text())["tasks"]
    assert list(result) == list(cli) == ["first", "last"]  # the tasks a's and b's mcl.json record
    for task in cli:
        assert result[task]["loss"] == pytest.approx(cli[task]["loss"], rel=1e-9)
        assert result[task]["barrier"]["loss"] == pytest.approx(cli[task]["barrier"]["loss"], rel=1e-9)


def test_plane_scores_the_grid_and_draws_it(run, tmp_path):
    a, b, c = sorted((run["dir"] / "tasks").iterdir())
    plane = mcl.plane(a, b, c, tasks=[str(run["dir"].parents[1] / "count")], grid=2, png=tmp_path / "plane.png")
    assert len(plane.frame) == 4 and set(plane.frame["task"]) == {"count"} and (tmp_path / "plane.png").is_file()


def test_import_mcl_is_light():
    code = "import sys, mcl; mcl.__version__; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stderr
