"""Tokenisation and collation by the loss convention (docs/design.md §3), with a declared text format.

A `TextFormat` says how an example (prompt, answer) becomes tokens:
- join `ids` (`separator: null`, the default and the tiny configs' convention): ids = [bos] +
  tok(prompt) + tok(answer) + [eos], each part tokenised with `add_special_tokens=False`;
- join text (`separator: " "`, any string): the string prompt + separator + answer is tokenised once,
  and the prompt is masked by character offsets (a token holding any separator/answer character is a
  label), then [eos] follows;
- chat (`chat_template: true`, instruct models): the tokenizer's chat template renders the prompt as
  the user turn and the answer as the assistant turn; labels are the assistant answer and the
  template's end-of-turn token only.
`bos` (auto | always | never) decides the leading bos: `auto` adds the tokenizer's bos unless it is a
chat-template role marker (SmolLM2's `<|im_start|>`), so the tiny model keeps it and SmolLM2 does not.
Labels are -100 on bos + prompt. Over-long examples lose prompt tokens from the left (after bos and
any chat header); if the answer alone does not fit, it is cut on the right. Generation prompts are
encoded the same way without the answer (`encode_prompts`). Training batches are right-padded
(`collate`), generation prompts left-padded (`collate_prompts`); padding is masked out of attention
and labelled -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mcl.data.task import Example
from mcl.data.text import TextFormat
from mcl.errors import MclError

IGNORE = -100


def text_format(value: "TextFormat | dict[str, Any] | None") -> TextFormat:
    """A checked TextFormat from a TextFormat, a dict (config, mcl.json) or None (the default)."""
    if value is None:
        return TextFormat()
    if isinstance(value, TextFormat):
        return value.check()
    try:
        return TextFormat(**value).check()
    except TypeError as e:
        raise MclError(f"bad text format {value!r}: {e}") from None


def text_meta(text: TextFormat) -> dict[str, Any]:
    """`{"text": ...}` for an adapter's mcl.json when the format is not the default, else {}."""
    return {} if text.is_default() else {"text": text.describe()}


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


def _template(tokenizer) -> str:
    t = getattr(tokenizer, "chat_template", None)
    return "\n".join(t.values()) if isinstance(t, dict) else (t or "")


def bos_ids(tokenizer, text: TextFormat | None = None) -> list[int]:
    """The leading ids by the format's bos policy ([] or [bos])."""
    policy = (text or TextFormat()).bos
    bos = tokenizer.bos_token_id
    if policy == "never" or (bos is None and policy == "auto"):
        return []
    if bos is None:
        raise MclError("text.bos=always but the tokenizer has no bos token")
    if policy == "auto" and tokenizer.bos_token in _template(tokenizer):
        return []  # the bos token is a chat role marker (SmolLM2's <|im_start|>), not a document start
    return [bos]


def end_id(tokenizer, text: TextFormat | None = None) -> int:
    """The id that ends an answer: eos, or with a chat template its end-of-turn token."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token; the loss convention needs one")
    if not (text and text.chat_template):
        return tokenizer.eos_token_id
    probe = "mcl"
    rendered, start = _render_chat(tokenizer, "?", probe)
    tail = tokenizer(rendered[start + len(probe) :], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return next((i for i in tail if i in special), tokenizer.eos_token_id)


def _apply_template(tokenizer, turns: list[dict[str, str]], **kwargs) -> str:
    """The tokenizer's chat template rendered (in transformers' Jinja sandbox); a failure is one MclError."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    try:
        return tokenizer.apply_chat_template(turns, tokenize=False, **kwargs)
    except SecurityError as e:
        raise MclError(f"the chat template of {tokenizer.name_or_path} tried an unsafe operation, stopped by the Jinja "
                       f"sandbox ({e}); that template is not to be trusted") from None
    except TemplateError as e:
        raise MclError(f"the chat template of {tokenizer.name_or_path} failed: {type(e).__name__}: {e}") from None


def _render_chat(tokenizer, prompt: str, answer: str | None) -> tuple[str, int]:
    """The chat-rendered text and where the assistant's content starts (end of the generation prompt)."""
    if not _template(tokenizer):
        raise MclError("text.chat_template=true but the tokenizer has no chat template (a base model?)")
    turns = [{"role": "user", "content": prompt}]
    head = _apply_template(tokenizer, turns, add_generation_prompt=True)
    if answer is None:
        return head, len(head)
    full = _apply_template(tokenizer, turns + [{"role": "assistant", "content": answer}])
    if not full.startswith(head + answer):
        raise MclError("the chat template does not render the answer right after the generation prompt")
    return full, len(head)


def _render(tokenizer, text: TextFormat, prompt: str, answer: str | None) -> tuple[str, int, int, int]:
    """(string, start of the prompt content, end of the prompt part, end of the answer) for a text join."""
    if text.chat_template:
        s, cut = _render_chat(tokenizer, prompt, answer)
        return s, s.rfind(prompt, 0, cut), cut, cut + len(answer or "")
    s = prompt if answer is None else prompt + text.separator + answer
    return s, 0, len(prompt), len(s)


def _parts(tokenizer, text: TextFormat, prompts: Sequence[str], answers: Sequence[str] | None):
    """Per example (head, body, target) ids before bos/end: head is kept whole, body is cut on the left."""
    if not prompts:
        return []
    if not text.joins_text:
        bodies = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        targets = tokenizer(list(answers), add_special_tokens=False)["input_ids"] if answers is not None else None
        return [([], b, targets[k] if targets is not None else []) for k, b in enumerate(bodies)]
    rendered = [_render(tokenizer, text, p, None if answers is None else answers[k]) for k, p in enumerate(prompts)]
    enc = tokenizer([r[0] for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, (_, start, cut, stop) in zip(enc["input_ids"], enc["offset_mapping"], rendered):
        ends = [e for _, e in offsets]
        out.append((
            [i for i, e in zip(ids, ends) if e <= start],  # bos-less chat header before the prompt content
            [i for i, e in zip(ids, ends) if start < e <= cut],  # prompt (a token ending after it is a label)
            [i for i, e in zip(ids, ends) if cut < e <= stop],  # separator + answer
        ))
    return out


def _keep_right(ids: list[int], room: int) -> list[int]:
    """The last `room` ids (all when they fit, none when room <= 0)."""
    return ids[max(0, len(ids) - room) :] if room > 0 else []


def encode_examples(tokenizer, examples: Sequence[Example], max_len: int, text: TextFormat | None = None) -> list[Encoded]:
    """Tokenise examples by the loss convention and `text` format, left-truncating prompts to fit `max_len`."""
    text = text or TextFormat()
    bos, end = bos_ids(tokenizer, text), [end_id(tokenizer, text)]
    out = []
    for head, body, answer in _parts(tokenizer, text, [e.prompt for e in examples], [e.answer for e in examples]):
        head = bos + head
        target = (answer + end)[: max(0, max_len - len(head))]
        room = max_len - len(head) - len(target)
        prompt = head + _keep_right(body, room)
        prompt = prompt[: max_len - len(target)]
        out.append(Encoded(prompt + target, [IGNORE] * len(prompt) + target))
    return out


def encode_prompts(tokenizer, prompts: Sequence[str], max_len: int, text: TextFormat | None = None) -> list[list[int]]:
    """Tokenise generation prompts as in training without the answer, keeping at most `max_len` ids (cut on the left)."""
    text = text or TextFormat()
    bos = bos_ids(tokenizer, text)
    out = []
    for head, body, _ in _parts(tokenizer, text, list(prompts), None):
        head = bos + head
        room = max_len - len(head)
        out.append((head + _keep_right(body, room))[: max(0, max_len)])
    return out


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
