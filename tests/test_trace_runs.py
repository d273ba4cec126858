"""TRACE-shaped task dirs end to end: templates, epochs, checkpoints that record their data, and mcl-barrier
scoring exactly that data without --data (or refusing, in one line, data that is gone or changed)."""

import json
import random
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main
from mcl.train.config import load_config
from mcl.train.loop import train

STANCES = ["支持", "反对", "中立"]
POLICY = ["dovish", "hawkish", "neutral"]


def _write(d, rows_by_split):
    d.mkdir(parents=True)
    for split, rows in rows_by_split.items():
        (d / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def _rows(rng, prompt, labels, n):
    return [{"prompt": prompt(rng.randrange(100)), "answer": rng.choice(labels)} for _ in range(n)]


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """Two TRACE-format dirs (one named like the built-in `fomc` task), templates copied in, and a tiny base."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("trace")
    rng = random.Random(0)
    stance = root / "TRACE" / "C-STANCE"
    fomc = root / "TRACE" / "fomc"
    _write(stance, {s: _rows(rng, lambda i: f"判断以下文本对指定对象的态度。\n文本：\n第{i}条\n态度：\n", STANCES, n)
                    for s, n in (("train", 8), ("eval", 4), ("test", 4))})
    _write(fomc, {s: _rows(rng, lambda i: f"What is the monetary policy stance?\nText:\nrate {i}\nStance:\n", POLICY, n)
                  for s, n in (("train", 12), ("eval", 4), ("test", 4))})
    assert main(["data", "template", "C-STANCE", str(stance)]) == 0
    assert main(["data", "template", "FOMC", str(fomc)]) == 0
    tok = train_tokenizer([p.read_text(encoding="utf-8") for p in root.rglob("*.json")] * 3, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return {"root": root, "dirs": [str(stance), str(fomc)], "base": str(root / "base")}


@pytest.fixture(scope="module")
def run(trace, tmp_path_factory):
    """Two I-LoRA phases on the TRACE dirs, by epochs (1 and 2 epochs of batch 4: 2 and 6 steps)."""
    cfg = load_config(None, **{
        "model": trace["base"], "tasks": trace["dirs"], "method": "ilora", "method_args": {"buffer_size": 8},
        "runs_dir": str(tmp_path_factory.mktemp("runs")), "train.epochs_per_task": [1, 2], "train.batch_size": 4,
        "train.warmup": 1, "train.lr": 5e-3, "eval.max_examples": 4, "eval.generate": False,
        "lora.r": 4, "lora.alpha": 8.0, "lora.target_modules": ["q_proj", "v_proj"],
    })
    run_dir = train(cfg, progress_bar=False)
    return {"dir": run_dir, "a": run_dir / "tasks" / "0-C-STANCE" / "slow", "b": run_dir / "tasks" / "1-fomc" / "slow"}


def test_epochs_set_the_steps_and_checkpoints_record_their_data(trace, run):
    steps = [json.loads((run["dir"] / "metrics" / f"phase-{k}.json").read_text())["steps"] for k in (0, 1)]
    assert steps == [2, 6]
    meta = json.loads((run["b"] / "mcl.json").read_text())
    (rec,) = meta["tasks"]
    assert rec["name"] == "fomc" and rec["source"] == trace["dirs"][1] and len(rec["hash"]) == 64
    assert rec["dir"] == str(trace["root"] / "TRACE" / "fomc")


def _barrier(run, out, *extra):
    args = [str(run["a"]), str(run["b"]), "--points", "2", "--limit", "4", "--quiet", "--no-cache", "--out", str(out)]
    rc = barrier_main([*args, *extra])
    return rc, (json.loads((out / "barrier.json").read_text()) if rc == 0 else None)


def test_barrier_without_data_scores_the_recorded_dirs_not_the_built_in(trace, run, tmp_path):
    rc, recorded = _barrier(run, tmp_path / "recorded")
    assert rc == 0 and list(recorded["tasks"]) == ["C-STANCE", "fomc"]
    rc, explicit = _barrier(run, tmp_path / "explicit", "--data", *trace["dirs"])
    assert rc == 0 and recorded["tasks"] == explicit["tasks"]
    rc, built_in = _barrier(run, tmp_path / "built-in", "--data", trace["dirs"][0], "fomc")
    assert rc == 0 and built_in["tasks"]["fomc"]["loss"] != recorded["tasks"]["fomc"]["loss"]


def test_changed_or_vanished_data_is_a_one_line_error(trace, run, tmp_path, capsys):
    fomc = trace["root"] / "TRACE" / "fomc"
    backup = tmp_path / "fomc-backup"
    shutil.copytree(fomc, backup)
    try:
        rows = json.loads((fomc / "eval.json").read_text())
        rows[0]["answer"] = "hawkish" if rows[0]["answer"] != "hawkish" else "dovish"
        (fomc / "eval.json").write_text(json.dumps(rows))
        rc, _ = _barrier(run, tmp_path / "changed")
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "task fomc: the data at" in err and "changed" in err
        shutil.rmtree(fomc)
        rc, _ = _barrier(run, tmp_path / "gone")
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "task fomc: its data dir" in err and "is gone" in err
    finally:
        shutil.rmtree(fomc, ignore_errors=True)
        shutil.copytree(backup, fomc)


def test_trace_templates_carry_trace_metrics(trace):
    from mcl.data import load_task
    from mcl.data.task import TEMPLATE_DIR

    metrics = {f.stem: json.loads(f.read_text(encoding="utf-8"))["metric"] for f in TEMPLATE_DIR.glob("*.json")}
    assert metrics == {"C-STANCE": "exact_match", "FOMC": "exact_match", "MeetingBank": "rouge_l",
                       "Py150": "py150_similarity", "ScienceQA": "answer_choice", "NumGLUE-cm": "exact_match",
                       "NumGLUE-ds": "exact_match", "20Minuten": "sari"}
    task = load_task(trace["dirs"][0])
    assert task.name == "C-STANCE" and task.metric == "exact_match" and task.spec.max_new_tokens == 512


def test_data_check_names_what_is_missing(trace, tmp_path, capsys):
    assert main(["data", "check", *trace["dirs"]]) == 0
    assert capsys.readouterr().out.count("ok ") == 2
    broken = tmp_path / "Py150"
    _write(broken, {"train": [{"prompt": "x = ", "answer": "1"}]})
    assert main(["data", "check", trace["dirs"][0], str(broken)]) == 2
    captured = capsys.readouterr()
    assert "no task.json; copy the TRACE template: mcl data template Py150" in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    (broken / "task.json").write_text("{}")
    assert main(["data", "check", str(broken)]) == 2
    assert "missing split(s) eval, test" in capsys.readouterr().out


def test_epochs_list_must_fit_the_tasks(trace, tmp_path, capsys):
    argv = ["train", f"model={trace['base']}", f"runs_dir={tmp_path}", f"tasks=[{','.join(trace['dirs'])}]",
            "train.epochs_per_task=5,3,7", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "epochs_per_task lists 3 values for 2 tasks" in err and len(err.splitlines()) == 1
    assert main([*argv[:-2], "train.epochs_per_task=0", "--quiet"]) == 2
    assert "positive number" in capsys.readouterr().err


def test_barrier_matrix_on_the_run_scores_the_recorded_dirs(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the dirs are recorded absolutely: any working directory finds them
    assert main(["barrier-matrix", str(run["dir"]), "--points", "2", "--limit", "4", "--quiet", "--no-cache",
                 "--out", str(tmp_path / "bm")]) == 0
    info = json.loads((tmp_path / "bm" / "barrier_matrix.json").read_text())
    assert info["labels"] == ["0-C-STANCE/slow", "1-fomc/slow"]
    barriers = (tmp_path / "bm" / "barriers.csv").read_text()
    assert "C-STANCE" in barriers and ",fomc," in barriers
