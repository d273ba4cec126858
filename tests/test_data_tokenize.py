"""Tokenisation by the loss convention (docs/design.md §3) and right/left-padded collation."""

import copy

import torch

from mcl.data import IGNORE, Example, collate, collate_prompts, encode_examples, encode_prompts


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_bos_prompt_answer_eos_and_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    (enc,) = encode_examples(tok, [Example("Ana has 4 apples.\nAnswer:", " 7")], max_len=256)
    p, a = _ids(tok, "Ana has 4 apples.\nAnswer:"), _ids(tok, " 7")
    assert enc.input_ids == [tok.bos_token_id] + p + a + [tok.eos_token_id]
    assert enc.labels == [IGNORE] * (1 + len(p)) + a + [tok.eos_token_id]


def test_no_bos_when_tokenizer_has_none(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.bos_token = None
    (enc,) = encode_examples(tok, [Example("2+2=", "4")], max_len=256)
    assert enc.input_ids == _ids(tok, "2+2=") + _ids(tok, "4") + [tok.eos_token_id]
    assert encode_prompts(tok, ["2+2="], 256) == [_ids(tok, "2+2=")]


def test_over_long_prompt_loses_tokens_on_the_left(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt = "The committee voted 7 to 2 to approve the budget. " * 3
    p, a = _ids(tok, prompt), _ids(tok, "approved")
    (enc,) = encode_examples(tok, [Example(prompt, "approved")], max_len=12)
    keep = 12 - 1 - len(a) - 1
    assert len(enc.input_ids) == 12
    assert enc.input_ids == [tok.bos_token_id] + p[-keep:] + a + [tok.eos_token_id]
    assert enc.labels[-len(a) - 1 :] == a + [tok.eos_token_id]
    assert encode_prompts(tok, [prompt], 10) == [[tok.bos_token_id] + p[-9:]]


def test_answer_longer_than_max_len_is_cut_on_the_right(tiny_tokenizer):
    tok = tiny_tokenizer
    a = _ids(tok, "Inflation rose in March and the committee voted")
    (enc,) = encode_examples(tok, [Example("Q:", "Inflation rose in March and the committee voted")], max_len=5)
    assert enc.input_ids == [tok.bos_token_id] + a[:4] and enc.labels == [IGNORE] + a[:4]


def test_collate_right_pads_with_masked_ignored_padding(tiny_tokenizer):
    enc = encode_examples(tiny_tokenizer, [Example("a", "b"), Example("a longer prompt", "and answer")], 256)
    b = collate(enc, pad=99)
    n0 = len(enc[0].input_ids)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (2, len(enc[1].input_ids))
    assert b["input_ids"][0, :n0].tolist() == enc[0].input_ids and (b["input_ids"][0, n0:] == 99).all()
    assert (b["labels"][0, n0:] == IGNORE).all() and b["attention_mask"][0].tolist() == [1] * n0 + [0] * (b["input_ids"].shape[1] - n0)
    assert b["attention_mask"][1].all()


def test_collate_prompts_left_pads(tiny_tokenizer):
    b = collate_prompts([[5, 6, 7], [8]], pad=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["input_ids"].dtype == torch.long
