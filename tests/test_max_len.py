"""Lengths follow the data: analysis and eval take max_len from the run record or the task, and never cut silently."""

import json
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.cli.main import main as mcl_main
from mcl.errors import MclError
from mcl.eval.lengths import TaskLengths
from mcl.train.records import recorded_max_len

from test_barrier_cli import WORDS, write_adapter

LONG = 100  # words in a TRACE-length prompt (about 480 tokens with this tokenizer: over 256, under 1024 - 512)


def _rows(name: str, n: int, long: bool) -> list[dict]:
    rng = random.Random(name)
    rows = []
    for k in range(n):
        words = [rng.choice(WORDS) for _ in range(LONG if long and k % 2 == 0 else rng.randint(2, 4))]
        rows.append({"prompt": f"{name}: {' '.join(words)} ->", "answer": words[0]})
    return rows


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny base with a 1024-token context, a short task and a TRACE-shaped one (512 new tokens, long prompts)."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("lengths")
    tasks = {}
    for name, new_tokens, long in (("short", 3, False), ("trace", 512, True)):
        d = root / name
        d.mkdir()
        for split in ("train", "eval"):
            (d / f"{split}.json").write_text(json.dumps(_rows(f"{name}-{split}", 4, long)))
        (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": new_tokens}))
        tasks[name] = str(d)
    tok = train_tokenizer([" ".join(WORDS) + " short: trace: ->"] * 20, vocab_size=120)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")

    def base():
        return LlamaForCausalLM.from_pretrained(root / "base")

    a, b = write_adapter(root / "a", base(), 1), write_adapter(root / "b", base(), 2)
    (root / "a" / "mcl.json").write_text(json.dumps({"max_len": 256}))  # a training run's record
    return {"root": root, "base": str(root / "base"), "tasks": tasks, "tok": tok, "a": a, "b": b}


def _lengths(setting, task: str, split: str = "eval") -> tuple[list[int], list[int]]:
    """Uncut (whole example, prompt) token counts by the loss convention, tokenised here by hand."""
    tok = setting["tok"]
    rows = json.loads((setting["root"] / task / f"{split}.json").read_text())
    prompts = [1 + len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
    answers = [len(tok(r["answer"], add_special_tokens=False)["input_ids"]) + 1 for r in rows]
    return [p + a for p, a in zip(prompts, answers)], prompts


def test_task_lengths_count_what_a_max_len_cuts(setting):
    from mcl.data.load import load_tasks

    (task,) = load_tasks([setting["tasks"]["trace"]])
    n = TaskLengths.measure(setting["tok"], "trace", task.split("eval"), 512)
    full, prompts = _lengths(setting, "trace")
    assert list(n.examples) == full and list(n.prompts) == prompts and max(prompts) > LONG
    assert n.needed(False) == max(full) and n.needed(True) == max(prompts) + 512
    assert n.cuts(n.needed(True), True) is None and n.cuts(max(full), False) is None
    message = n.cuts(max(prompts) + 100, True)
    room = max(prompts) - 412
    assert message.startswith(f"task trace (eval split): 2 of 4 generation prompts are cut to {room} tokens")
    assert f"max_len {max(prompts) + 512} keeps them whole" in message
    assert n.cuts(256, False) == (f"task trace (eval split): 2 of 4 examples are longer than max_len 256 and lose "
                                  "prompt tokens on the left (answers too when they alone do not fit); max_len "
                                  f"{max(full)} keeps them whole")
    with pytest.raises(MclError, match="max_len 256 leaves no room for a prompt before max_new_tokens 512"):
        n.cuts(256, True)


@pytest.mark.parametrize("how", ["eval --max-len 256", "barrier recorded 256", "barrier --max-len 256"])
def test_trace_task_with_512_new_tokens_at_max_len_256_is_never_cut_silently(setting, tmp_path, capsys, how):
    trace = setting["tasks"]["trace"]
    if how.startswith("eval"):
        argv, out = ["eval", "--model", setting["base"], "--tasks", trace, "--quiet"], tmp_path / "o.json"
    else:  # a's mcl.json records its run's max_len 256: used unless --max-len is given
        argv, out = ["barrier", setting["a"], setting["b"], "--tasks", trace, "--points", "2", "--no-cache",
                     "--quiet"], tmp_path / "o"
    argv += ["--max-len", "256"] if "--max-len" in how else []
    assert mcl_main([*argv, "--metric"]) == 2
    err = capsys.readouterr().err
    assert "max_len 256 leaves no room for a prompt before max_new_tokens 512" in err and len(err.splitlines()) == 1
    assert mcl_main([*argv, "--no-metric", "--out", str(out)]) == 0  # the loss alone runs, and says what it cuts
    err = capsys.readouterr().err
    full, _ = _lengths(setting, "trace")
    long = sum(n > 256 for n in full)
    assert long == 2 and f"warning: task trace (eval split): {long} of 4 examples are longer than max_len 256" in err


def test_default_max_len_follows_the_data_and_cuts_nothing(setting, tmp_path, capsys):
    tasks = [setting["tasks"]["short"], setting["tasks"]["trace"]]
    out = tmp_path / "r.json"
    assert mcl_main(["eval", "--model", setting["base"], "--tasks", *tasks, "--no-metric", "--quiet",
                     "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    rows = {r["task"]: r for r in json.loads(out.read_text())["results"]}
    assert {t: r["max_len"] for t, r in rows.items()} == {t: max(_lengths(setting, t)[0]) for t in ("short", "trace")}
    wide = tmp_path / "wide.json"
    assert mcl_main(["eval", "--model", setting["base"], "--tasks", *tasks, "--no-metric", "--quiet",
                     "--max-len", "1000", "--out", str(wide)]) == 0
    assert [r["loss"] for r in json.loads(wide.read_text())["results"]] == [r["loss"] for r in rows.values()]
    with_metric = tmp_path / "m.json"  # generating: also room for the longest prompt and the task's new tokens
    assert mcl_main(["eval", "--model", setting["base"], "--tasks", tasks[0], "--quiet",
                     "--out", str(with_metric)]) == 0
    full, prompts = _lengths(setting, "short")
    assert json.loads(with_metric.read_text())["max_len"] == max(max(full), max(prompts) + 3)


def test_a_barrier_uses_the_recorded_max_len_unless_asked(setting, tmp_path, capsys):
    short = setting["tasks"]["short"]
    for extra, expected in (([], 256), (["--max-len", "9"], 9)):
        out = tmp_path / str(expected)
        assert mcl_main(["barrier", setting["a"], setting["b"], "--tasks", short, "--points", "2", "--no-cache",
                         "--quiet", "--out", str(out), *extra]) == 0
        assert json.loads((out / "barrier.json").read_text())["max_len"] == {"short": expected}
    cut = sum(n > 9 for n in _lengths(setting, "short")[0])
    assert cut and f"task short (eval split): {cut} of 4 examples are longer than max_len 9" in capsys.readouterr().err


def test_recorded_max_len_reads_mcl_json_then_the_run_config(tmp_path):
    run = tmp_path / "run"
    slow = run / "tasks" / "0-a" / "slow"
    slow.mkdir(parents=True)
    assert recorded_max_len(slow, {}) is None
    (run / "config.yaml").write_text("train: {max_len: 96}\n")
    assert recorded_max_len(slow, {}) == recorded_max_len(slow.parent, {}) == 96
    assert recorded_max_len(slow, {"max_len": 40}) == 40  # the checkpoint's own record first
    (run / "config.yaml").write_text("train: {lr: 0.1}\n")
    assert recorded_max_len(slow, {}) == 256  # the config's default
    (run / "config.yaml").write_text("- not a config\n")
    assert recorded_max_len(slow, {}) is None
    (run / "config.yaml").write_text("train: {max_len: many}\n")
    with pytest.raises(MclError, match="config.yaml: max_len must be an integer >= 1, got 'many'"):
        recorded_max_len(slow, {})
    with pytest.raises(MclError, match="mcl.json: max_len must be an integer >= 1, got 0"):
        recorded_max_len(slow, {"max_len": 0})


def test_training_reports_its_cuts_and_records_its_max_len(setting, tmp_path, capsys):
    from mcl.train.config import load_config
    from mcl.train.loop import train

    def config(max_len: int, generate: bool):
        return load_config(None, **{
            "model": setting["base"], "tasks": [setting["tasks"]["short"]], "method": "seq",
            "runs_dir": str(tmp_path / "runs"), "train.steps_per_task": 1, "train.batch_size": 2, "train.warmup": 0,
            "train.max_len": max_len, "eval.generate": generate, "lora.r": 2})

    with pytest.raises(MclError, match="max_len 3 leaves no room for a prompt before max_new_tokens 3"):
        train(config(3, True), progress_bar=False)
    assert not (tmp_path / "runs").exists()  # refused before the run dir appears
    run_dir = train(config(9, False), progress_bar=False)
    out = capsys.readouterr().out
    full = {split: _lengths(setting, "short", split)[0] for split in ("train", "eval")}
    for split, lengths in full.items():
        cut = sum(n > 9 for n in lengths)
        assert cut and f"warning: task short ({split} split): {cut} of 4 examples are longer than max_len 9" in out
    (meta,) = [json.loads(f.read_text()) for f in (run_dir / "tasks").rglob("mcl.json")]
    assert meta["max_len"] == 9
