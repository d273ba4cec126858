"""`train.log_with` trackers get per-step losses and, after each task, every task's score and loss, OP/BWT/forgetting
so far and the method's terms (I-LoRA: CE_cur, CE_buf, consistency, ‖slow − fast‖); read back with TensorBoard's reader.
Progress bars name I-LoRA's learners, never an internal view name."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.train.config import load_config
from mcl.train.loop import train

pytest.importorskip("tensorboard")  # the dev extra installs it
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("trackers")
    tasks = []
    for name, fn in (("first", lambda w: w[0]), ("last", lambda w: w[-1])):
        rng, d = random.Random(name), root / name
        d.mkdir()
        for split, n in (("train", 16), ("eval", 4), ("test", 4)):
            rows = [{"prompt": f"{name}: {' '.join(w)} ->", "answer": fn(w)}
                    for w in ([rng.choice("ab cd ef gh".split()) for _ in range(3)] for _ in range(n))]
            (d / f"{split}.json").write_text(json.dumps(rows))
        (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 2}))
        tasks.append(str(d))
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3, vocab_size=120)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return {"model": str(root / "base"), "tasks": tasks}


def _scalars(run_dir):
    events = EventAccumulator(str(next((run_dir / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_step_losses_task_scores_cl_metrics_and_ilora_terms(setting, tmp_path, capfd):
    cfg = load_config(None, model=setting["model"], tasks=setting["tasks"], method="ilora", runs_dir=str(tmp_path),
                      **{"train.steps_per_task": 4, "train.batch_size": 4, "train.warmup": 1, "train.log_every": 2,
                         "train.log_with": "tensorboard", "eval.max_examples": 4, "eval.batch_size": 4,
                         "method_args.buffer_size": 8, "lora.r": 2})
    run_dir = train(cfg, progress_bar=True)
    bars = capfd.readouterr().err
    assert "scoring the slow learner" in bars and "scoring the fast learner" in bars and "scoring slow" not in bars
    tags = _scalars(run_dir)
    assert not [t for t in tags if "phase" in t]  # the phase is the step, not a series
    assert [s for s, _ in tags["train/loss"]] == [2, 4, 6, 8]  # steps count across the run
    for term in ("ce_cur", "ce_buf", "consistency", "slow_fast_dist"):
        assert f"task_end/{term}" in tags, term
    assert [s for s, _ in tags["train/slow_fast_dist"]] == [2, 4, 6, 8]
    phases = [json.loads((run_dir / "metrics" / f"phase-{k}.json").read_text()) for k in range(2)]
    for k, p in enumerate(phases):
        for view, prefix in (("slow", "eval"), ("fast", "eval_fast")):
            for task in ("first", "last"):
                step, value = tags[f"{prefix}/{task}/loss"][k]
                assert step == 4 * (k + 1) and value == pytest.approx(p["scores"][view][task]["loss"], rel=1e-6)
                assert tags[f"{prefix}/{task}/score"][k][1] == pytest.approx(p["scores"][view][task]["metric"])
    L = np.array([[p["scores"]["slow"][t]["loss"] for t in ("first", "last")] for p in phases])
    assert tags["cl/loss_OP"][0][1] == pytest.approx(L[0, 0], rel=1e-6)  # after task 1: the one task seen
    assert tags["cl/loss_OP"][1][1] == pytest.approx(L[1].mean(), rel=1e-6)
    assert tags["cl/loss_BWT"] == [(8, pytest.approx(L[1, 0] - L[0, 0], rel=1e-5))]  # defined once two tasks are seen
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    assert tags["cl/score_OP"][-1][1] == pytest.approx(summary["score"]["OP"], rel=1e-6)
