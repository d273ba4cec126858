"""Tokenisation and collation by the loss convention (docs/design.md §3).

ids = [bos if the tokenizer has one] + tok(prompt) + tok(answer) + [eos], each part tokenised with
`add_special_tokens=False`; labels are -100 on bos+prompt and the ids on answer+eos. Over-long
examples lose prompt tokens from the left (after bos); if the answer alone does not fit, it is cut
on the right. Training batches are right-padded (`collate`), generation prompts left-padded
(`collate_prompts`); padding is masked out of attention and labelled -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mcl.data.task import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: input ids and labels of the same length."""

    input_ids: list[int]
    labels: list[int]


def pad_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its eos token."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    return pid


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def _tok(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def encode_examples(tokenizer, examples: Sequence[Example], max_len: int) -> list[Encoded]:
    """Tokenise examples by the loss convention, left-truncating prompts to fit `max_len`."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token; the loss convention needs one")
    bos, eos = _bos(tokenizer), [tokenizer.eos_token_id]
    prompts = _tok(tokenizer, [e.prompt for e in examples])
    answers = _tok(tokenizer, [e.answer for e in examples])
    out = []
    for p, a in zip(prompts, answers):
        target = (a + eos)[: max(0, max_len - len(bos))]
        room = max_len - len(bos) - len(target)
        prompt = p[len(p) - room :] if room > 0 else []
        out.append(Encoded(bos + prompt + target, [IGNORE] * (len(bos) + len(prompt)) + target))
    return out


def encode_prompts(tokenizer, prompts: Sequence[str], max_len: int) -> list[list[int]]:
    """Tokenise generation prompts as [bos] + prompt, keeping at most `max_len` ids (cut on the left)."""
    bos = _bos(tokenizer)
    room = max_len - len(bos)
    return [bos + (p[len(p) - room :] if room > 0 else []) for p in _tok(tokenizer, prompts)]


def collate(batch: Sequence[Encoded], pad: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids (pad), labels (-100) and attention_mask (0 on padding)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def collate_prompts(batch: Sequence[Sequence[int]], pad: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt ids for generation: input_ids and attention_mask (0 on padding)."""
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        if p:
            ids[i, width - len(p) :] = torch.tensor(list(p))
            mask[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}
