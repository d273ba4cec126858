"""`mcl eval` fits the sweeps: an adapter supplies its base model and recorded tasks, instruct models are scored with
their chat template unless told not to, and loss-only commands read bare TRACE dirs (no task.json)."""

import json
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import LoraSpec, add_lora, save_adapter
from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main
from mcl.data.load import load_task, task_record
from mcl.models import load_base

CHAT = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")


def _task(root, name, spec=True):
    rng = random.Random(name)
    d = root / name
    d.mkdir()
    for split in ("train", "eval", "test"):
        rows = [{"prompt": f"{name} {rng.randint(0, 9)} ->", "answer": rng.choice(["yes", "no"])} for _ in range(6)]
        (d / f"{split}.json").write_text(json.dumps(rows))
    if spec:
        (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 2}))
    return d


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny base dir whose tokenizer has a chat template, two tasks (one bare), and two mcl adapters on it."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("evaldefaults")
    tasks = [_task(root, "first"), _task(root, "bare", spec=False)]
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3 + ["user: assistant:"] * 5, vocab_size=200)
    tok.chat_template = CHAT
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    adapters = []
    for seed in (1, 2):
        base, _ = load_base(root / "base")
        peft = add_lora(base, LoraSpec(r=2, target_modules=["q_proj"]), seed=seed)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
        meta = {"task": "first", "tasks": [task_record(load_task(tasks[0]))]}
        adapters.append(str(save_adapter(peft, root / f"adapter{seed}", meta=meta)))
    return {"root": root, "base": str(root / "base"), "tasks": [str(t) for t in tasks], "adapters": adapters}


def _eval(argv, tmp_path, name):
    out = tmp_path / f"{name}.json"
    assert main(["eval", *argv, "--no-metric", "--quiet", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_eval_takes_base_and_tasks_from_the_adapter(setting, tmp_path):
    implied = _eval(["--adapter", setting["adapters"][0]], tmp_path, "implied")
    explicit = _eval(["--adapter", setting["adapters"][0], "--model", setting["base"], "--tasks", setting["tasks"][0]],
                     tmp_path, "explicit")
    assert implied["model"] == setting["base"] and [r["task"] for r in implied["results"]] == ["first"]
    assert implied["results"] == explicit["results"] and implied["text"] == explicit["text"]
    assert implied["text"]["chat_template"] is False  # the adapter's record (default format) wins over the template


def test_eval_without_a_record_uses_the_chat_template_unless_told_not_to(setting, tmp_path):
    chat = _eval(["--model", setting["base"], "--tasks", setting["tasks"][0]], tmp_path, "chat")
    plain = _eval(["--model", setting["base"], "--tasks", setting["tasks"][0], "--no-chat-template"], tmp_path, "plain")
    assert chat["text"]["chat_template"] is True and plain["text"]["chat_template"] is False
    assert chat["results"][0]["loss"] != plain["results"][0]["loss"]


def test_eval_without_metric_reads_a_bare_dir_for_its_loss(setting, tmp_path):
    bare = _eval(["--model", setting["base"], "--tasks", setting["tasks"][1]], tmp_path, "bare")
    assert bare["results"][0]["metric_name"] == "none" and bare["results"][0]["chance"] is None
    assert bare["results"][0]["loss"] > 0


def test_eval_needs_a_model_or_an_adapter(capsys):
    assert main(["eval", "--tasks", "topic"]) == 2
    assert "needs --model MODEL, or --adapter DIR" in capsys.readouterr().err


def test_loss_only_sweep_reads_a_bare_trace_dir_and_a_metric_sweep_asks_for_task_json(setting, tmp_path, capsys):
    a, b = setting["adapters"]
    bare = setting["tasks"][1]
    assert barrier_main([a, b, "--tasks", bare, "--points", "3", "--out", str(tmp_path / "loss"), "--quiet"]) == 0
    result = json.loads((tmp_path / "loss" / "barrier.json").read_text())
    assert list(result["tasks"]) == ["bare"] and result["tasks"]["bare"]["metric"] is None
    assert len(result["tasks"]["bare"]["loss"]) == 3
    capsys.readouterr()
    assert barrier_main([a, b, "--tasks", bare, "--metric", "--points", "3", "--out", str(tmp_path / "metric")]) == 2
    assert "bare: no task.json" in capsys.readouterr().err
