"""Text formats: the ids join (today's convention), the text join masked by offsets, chat templates, bos policy."""

import argparse
import copy

import pytest

from mcl.analysis.cache import PointCache
from mcl.analysis.sweep import _task_description
from mcl.cli.text_flags import add_text_arguments, text_of
from mcl.data import IGNORE, Example, Task, TaskSpec, TextFormat, encode_examples, encode_prompts, text_format
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.io import sha256_json
from mcl.train.config import load_config

EXAMPLES = [
    Example("Ana has 4 apples and gets 3 more. How many now?\nAnswer:", "7"),
    Example("Stance of: the committee voted to keep rates.\nStance:", "neutral"),
    Example("def add(a, b):\n    return", " a + b"),
    Example("Summarise: " + "the central bank held rates steady in March. " * 6, "rates held"),
]
# ChatML in the tiny tokenizer's own specials: like SmolLM2, its bos opens every turn
CHATML = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _reference(tok, e: Example, max_len: int) -> tuple[list[int], list[int]]:
    """DESIGN.md §3 as written: [bos] + tok(prompt) + tok(answer) + [eos], prompt cut on the left."""
    bos, p, target = [tok.bos_token_id], _ids(tok, e.prompt), (_ids(tok, e.answer) + [tok.eos_token_id])
    target = target[: max_len - 1]
    keep = max(0, max_len - 1 - len(target))
    p = p[len(p) - min(keep, len(p)):] if keep else []
    return bos + p + target, [IGNORE] * (1 + len(p)) + target


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHATML
    return tok


@pytest.mark.parametrize("max_len", [256, 40, 24, 12, 5])
def test_default_format_is_todays_ids_join(tiny_tokenizer, max_len):
    # 24 and 40 put some prompts between half the room and the room: the old slicing kept too few tokens there
    got = encode_examples(tiny_tokenizer, EXAMPLES, max_len)
    assert got == encode_examples(tiny_tokenizer, EXAMPLES, max_len, TextFormat())
    for enc, e in zip(got, EXAMPLES):
        assert (enc.input_ids, enc.labels) == _reference(tiny_tokenizer, e, max_len)


def test_text_join_masks_the_prompt_by_character_offsets(tiny_tokenizer):
    tok, fmt = tiny_tokenizer, TextFormat(separator=" ")
    for enc, e in zip(encode_examples(tok, EXAMPLES, 256, fmt), EXAMPLES):
        n = enc.labels.count(IGNORE)
        assert enc.input_ids == [tok.bos_token_id] + _ids(tok, e.prompt + " " + e.answer) + [tok.eos_token_id]
        assert enc.labels[:n] == [IGNORE] * n and enc.labels[n:] == enc.input_ids[n:]
        assert tok.decode(enc.input_ids[1:n]) == e.prompt
        assert tok.decode(enc.labels[n:-1]) == " " + e.answer and enc.labels[-1] == tok.eos_token_id


def test_generation_prompt_is_the_training_context(tiny_tokenizer, chat_tokenizer):
    for tok, fmt in [(tiny_tokenizer, TextFormat()), (tiny_tokenizer, TextFormat(separator=" ")),
                     (tiny_tokenizer, TextFormat(separator="\n", bos="never")), (chat_tokenizer, TextFormat(chat_template=True))]:
        for max_len in (256, 30):  # 30 cuts the long prompt: the context is the prompt cut to the same length
            for enc, e in zip(encode_examples(tok, EXAMPLES, max_len, fmt), EXAMPLES):
                n = enc.labels.count(IGNORE)
                assert encode_prompts(tok, [e.prompt], n, fmt) == [enc.input_ids[:n]], (fmt, max_len)


def test_chat_template_labels_only_the_answer_and_end_of_turn(chat_tokenizer):
    tok = chat_tokenizer
    (enc,) = encode_examples(tok, EXAMPLES[:1], 256, TextFormat(chat_template=True))
    text = tok.decode(enc.input_ids)
    assert text == f"<s>user\n{EXAMPLES[0].prompt}</s>\n<s>assistant\n7</s>"  # auto: no extra bos before the template
    n = enc.labels.count(IGNORE)
    assert tok.decode(enc.labels[n:]) == "7</s>"


def test_chat_truncation_keeps_the_template_header(chat_tokenizer):
    tok, fmt = chat_tokenizer, TextFormat(chat_template=True)
    (enc,) = encode_examples(tok, EXAMPLES[3:], 30, fmt)
    text = tok.decode(enc.input_ids)
    assert len(enc.input_ids) == 30 and text.startswith("<s>user\n") and text.endswith("</s>\n<s>assistant\nrates held</s>")
    assert "Summarise" not in text  # the prompt lost tokens from its left, inside the user turn


def test_bos_policy(tiny_tokenizer, chat_tokenizer):
    e = EXAMPLES[:1]
    bos = tiny_tokenizer.bos_token_id
    assert encode_examples(tiny_tokenizer, e, 64, TextFormat(separator=" "))[0].input_ids[0] == bos
    assert encode_examples(tiny_tokenizer, e, 64, TextFormat(bos="never"))[0].input_ids == \
        _reference(tiny_tokenizer, e[0], 64)[0][1:]
    chat = {policy: encode_examples(chat_tokenizer, e, 64, TextFormat(chat_template=True, bos=policy))[0].input_ids
            for policy in ("auto", "never", "always")}
    assert chat["auto"] == chat["never"]  # <s> opens every turn of this template: a role marker, not a bos
    assert chat["always"] == [bos] + chat["never"]
    nobos = copy.deepcopy(tiny_tokenizer)
    nobos.bos_token = None
    with pytest.raises(MclError, match="no bos"):
        encode_examples(nobos, e, 64, TextFormat(bos="always"))


def test_bad_formats_are_one_line_errors(tiny_tokenizer):
    with pytest.raises(MclError, match="no chat template"):
        encode_examples(tiny_tokenizer, EXAMPLES, 64, TextFormat(chat_template=True))
    with pytest.raises(MclError, match="exclude each other"):
        text_format({"separator": " ", "chat_template": True})
    with pytest.raises(MclError, match="text.bos"):
        load_config(None, **{"text.bos": "sometimes"})
    with pytest.raises(MclError, match="unknown config key"):
        load_config(None, **{"text.sep": " "})


def test_run_hash_unchanged_by_default_text_and_snapshot_every_zero():
    cfg = load_config(None)
    d = cfg.to_dict()
    d.pop("runs_dir"), d.pop("text"), d.pop("model_dtype")
    for key in ("epochs_per_task", "gradient_checkpointing", "log_with", "log_every", "lr_schedule", "fsdp", "ignore_memory_check"):
        d["train"].pop(key)
    assert cfg.run_hash(["h"]) == sha256_json({"config": d, "data": ["h"]})[:8]  # as before `text` existed
    ilora = load_config(None, method="ilora")
    assert load_config(None, method="ilora", **{"method_args.snapshot_every": 0}).run_hash(["h"]) == ilora.run_hash(["h"])
    assert load_config(None, method="ilora", **{"method_args.snapshot_every": 5}).run_hash(["h"]) != ilora.run_hash(["h"])
    assert load_config(None, **{"text.separator": " "}).run_hash(["h"]) != cfg.run_hash(["h"])
    assert load_config(None, overrides=["text.separator=' '"]).text.separator == " "


def test_sweep_cache_key_names_a_non_default_format(tiny_tokenizer):
    task = Task(TaskSpec("t"), preloaded={"eval": EXAMPLES})
    default, spaced = (TaskEvaluator(tiny_tokenizer, task, text=f) for f in (None, TextFormat(separator=" ")))
    assert "text" not in _task_description(default)
    assert _task_description(spaced)["text"] == {"separator": " ", "chat_template": False, "bos": "auto"}
    assert PointCache.key(_task_description(default)) != PointCache.key(_task_description(spaced))


def test_cli_flags_override_the_checkpoints_recorded_format():
    p = argparse.ArgumentParser()
    add_text_arguments(p)
    recorded = [{"text": {"separator": None, "chat_template": True, "bos": "auto"}}] * 2
    assert text_of(p.parse_args([])) == TextFormat()
    assert text_of(p.parse_args([]), recorded) == TextFormat(chat_template=True)
    assert text_of(p.parse_args(["--separator", " "]), [{}]) == TextFormat(separator=" ")
    assert text_of(p.parse_args(["--bos", "never"]), recorded) == TextFormat(bos="never")
    with pytest.raises(MclError, match="different text formats"):
        text_of(p.parse_args([]), [recorded[0], {}])


@pytest.mark.slow
def test_smollm2_formats_on_the_suite():
    """SmolLM2: no <|im_start|> bos by default, a real space before the answer, chat turns end at <|im_end|>."""
    from mcl import models
    from mcl.data import load_tasks
    from mcl.models import load_tokenizer

    tok = load_tokenizer(models.prepare("smollm2"))
    arith = load_tasks(["arith"])[0].split("eval")[:20]
    spaced = encode_examples(tok, arith, 256, TextFormat(separator=" "))
    for enc, e in zip(spaced, arith):
        n = enc.labels.count(IGNORE)
        assert enc.input_ids[0] != tok.bos_token_id and tok.decode(enc.input_ids[:n]) == e.prompt
        assert tok.decode(enc.labels[n:]) == " " + e.answer + "<|im_end|>"
    chat = encode_examples(tok, arith, 256, TextFormat(chat_template=True))
    for enc, e in zip(chat, arith):
        n = enc.labels.count(IGNORE)
        assert tok.decode(enc.input_ids[:n]).endswith(e.prompt + "<|im_end|>\n<|im_start|>assistant\n")
        assert tok.decode(enc.labels[n:]) == e.answer + "<|im_end|>"
        assert encode_prompts(tok, [e.prompt], n, TextFormat(chat_template=True)) == [enc.input_ids[:n]]
