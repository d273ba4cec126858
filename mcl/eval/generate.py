"""Batched greedy generation: length-sorted, left-padded prompts, KV cache, stop at eos.

Prompts are encoded exactly as in the loss convention ([bos] + prompt, left-truncated), so the
model continues from the same context it was trained to answer from.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mcl.data.tokenize import collate_prompts, encode_prompts, pad_id


@torch.inference_mode()
def greedy_generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32, max_len: int = 256
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, special tokens dropped), in input order."""
    from transformers import GenerationConfig

    pad, eos = pad_id(tokenizer), tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad
    )
    encoded = encode_prompts(tokenizer, prompts, max(1, max_len - max_new_tokens))
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
                out[i] = tokenizer.decode(ids, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out
