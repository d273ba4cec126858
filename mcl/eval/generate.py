"""Batched greedy generation: length-sorted, left-padded prompts, KV cache, stop at eos.

Prompts are encoded exactly as in the loss convention and the run's text format (bos policy, chat
template; left-truncated), so the model continues from the same context it was trained to answer
from; generation stops at the format's end token (eos, or the chat template's end of turn) and a
text-join separator the model emits first is dropped from the prediction.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mcl.data.tokenize import TextFormat, collate_prompts, encode_prompts, end_id, pad_id


@torch.inference_mode()
def greedy_generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32, max_len: int = 256,
    text: TextFormat | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, special tokens dropped), in input order."""
    from transformers import GenerationConfig

    pad, eos = pad_id(tokenizer), end_id(tokenizer, text)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad
    )
    encoded = encode_prompts(tokenizer, prompts, max(1, max_len - max_new_tokens), text)
    separator = text.separator if text and text.separator else ""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    device = next(model.parameters()).device
    out: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = {k: v.to(device) for k, v in collate_prompts([encoded[i] for i in idx], pad).items()}
            gen = model.generate(**batch, generation_config=config)
            new = gen[:, batch["input_ids"].shape[1] :].tolist()
            for i, ids in zip(idx, new):
                if eos in ids:
                    ids = ids[: ids.index(eos)]
                out[i] = tokenizer.decode(ids, skip_special_tokens=True).removeprefix(separator)
    finally:
        model.train(was_training)
    return out
