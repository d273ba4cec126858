"""Batched greedy generation, evaluate_task (whole and sharded) and the `mcl eval` command."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mcl.cli.main import main
from mcl.data import load_task
from mcl.eval import evaluate_task, greedy_generate
from mcl.eval.evaluate import TaskEvaluator

PROMPTS = ["Ana has 4 apples.\nAnswer:", "def add(a, b):\n", "Target: bike lanes\nPost: Bike lanes should be expanded.\nStance:"]


def _greedy_by_hand(model, tokenizer, prompt, max_new_tokens):
    ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax().item()
            if nxt == tokenizer.eos_token_id:
                break
            out.append(nxt)
    return tokenizer.decode(out, skip_special_tokens=True)


def test_batched_left_padded_generation_matches_one_by_one(tiny_llama, tiny_tokenizer):
    got = greedy_generate(tiny_llama, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    assert got == [_greedy_by_hand(tiny_llama, tiny_tokenizer, p, 6) for p in PROMPTS]


def test_generation_stops_at_eos(tiny_llama, tiny_tokenizer):
    head = torch.nn.Linear(tiny_llama.config.hidden_size, tiny_llama.config.vocab_size)
    with torch.no_grad():
        head.weight.copy_(tiny_llama.lm_head.weight)
        head.bias.zero_()
        head.bias[tiny_tokenizer.eos_token_id] = 1e4  # eos always wins
    tiny_llama.lm_head = head
    assert greedy_generate(tiny_llama, tiny_tokenizer, PROMPTS, max_new_tokens=5) == ["", "", ""]


@pytest.fixture
def qa_task(write_task_dir):
    rows = [{"prompt": p, "answer": "favor"} for p in PROMPTS]
    return write_task_dir("qa", {"train": rows, "eval": rows}, spec={"metric": "accuracy", "max_new_tokens": 4})


def test_evaluate_task_reports_loss_metric_and_chance(tiny_llama, tiny_tokenizer, qa_task):
    r = evaluate_task(tiny_llama, tiny_tokenizer, load_task(qa_task), "eval")
    assert set(r) >= {"task", "split", "n", "loss", "metric", "metric_name", "chance"}
    assert r["n"] == 3 and r["metric_name"] == "accuracy" and r["loss"] > 0 and 0 <= r["metric"] <= 1
    assert r["chance"] == 1.0  # every train answer is the reference
    loss_only = evaluate_task(tiny_llama, tiny_tokenizer, load_task(qa_task), "eval", generate=False)
    assert loss_only["metric"] is None and loss_only["loss"] == pytest.approx(r["loss"])


def test_shards_parts_sum_exactly_to_the_whole_split(tiny_llama, tiny_tokenizer, write_task_dir):
    """Two shards (3 + 2 examples) summed give the whole split's per-example parts, loss and metric exactly."""
    rows = [{"prompt": p, "answer": a} for p, a in zip(PROMPTS + PROMPTS[:2], ["7", "return a", "favor", "4", "x"])]
    task = load_task(write_task_dir("shards", {"eval": rows}, spec={"metric": "edit_similarity", "max_new_tokens": 4}))
    whole = TaskEvaluator(tiny_tokenizer, task, "eval", batch_size=1)
    shards = [TaskEvaluator(tiny_tokenizer, task, "eval", batch_size=1, shard=(rank, 2)) for rank in (0, 1)]
    parts = [s.example_parts(tiny_llama) for s in shards]
    assert [int((p[1] > 0).sum()) for p in parts] == [3, 2]  # each shard fills only its own examples
    summed = parts[0] + parts[1]
    assert torch.equal(summed, whole.example_parts(tiny_llama))
    expected = whole.evaluate(tiny_llama)
    assert shards[1].summarize(summed) == expected and expected["n"] == 5 and expected["metric"] > 0


def test_cli_eval_with_adapter_prints_table_and_writes_json(tiny_llama, tiny_tokenizer, qa_task, tmp_path, capsys):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_llama.save_pretrained(base_dir)
    tiny_tokenizer.save_pretrained(base_dir)
    peft = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(adapter_dir)
    out = tmp_path / "r.json"
    argv = ["eval", "--model", str(base_dir), "--adapter", str(adapter_dir), "--tasks", str(qa_task), "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "qa" in table and "accuracy" in table
    result = json.loads(out.read_text())
    assert result["adapter"] == str(adapter_dir) and result["results"][0]["n"] == 3
    rows = [json.loads(line) for line in (tmp_path / "r-predictions" / "eval-qa.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {"prompt", "answer", "generation", "score"}
    assert sum(r["score"] for r in rows) / 3 == pytest.approx(result["results"][0]["metric"])
    assert main(["eval", "--model", str(base_dir), "--adapter", str(tmp_path), "--tasks", str(qa_task)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PEFT adapter dir" in err[0]
