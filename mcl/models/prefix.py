"""Soft prompts in front of a causal LM's input, injected at its decoder: one model, every caller unchanged.

`SoftPrefix(model, provider)` hooks the decoder (`model.get_decoder()`): on a call without a filled KV
cache it asks `provider(input_ids, attention_mask)` for a (batch, L, hidden) prefix, prepends it to the
token embeddings, extends the attention mask (and explicit position ids / cache positions) by L, and
strips the L prefix positions from the returned hidden states again. So training losses, the loss
evaluator (which calls the decoder directly and gathers label positions) and `model.generate` (whose
decode steps find the prefix in the cache and get their mask and positions shifted by L) all see the
sequence as if L virtual tokens stood before it, and every position they index keeps its meaning.
This is what PEFT's prompt tuning computes, with the virtual tokens before any left padding.

Which positions of a batch are its *input* (prompt) rather than its answer is told by the callers that
know it (`input_positions`), for providers that condition on the input (L2P's query); without it every
non-padding position is input, as in generation.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

_INPUT_MASK: ContextVar[Callable[[], torch.Tensor] | None] = ContextVar("mcl_input_mask", default=None)


@contextmanager
def input_positions(mask: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Within the block, the decoder's input positions are `mask()` (batch, length), computed only if asked."""
    token = _INPUT_MASK.set(mask)
    try:
        yield
    finally:
        _INPUT_MASK.reset(token)


def current_input_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The input positions of the batch being run: the caller's mask, else every non-padding position."""
    mask = _INPUT_MASK.get()
    return (mask() if mask is not None else attention_mask).to(attention_mask.device).bool() & attention_mask.bool()


class SoftPrefix:
    """Decoder hooks that put `provider`'s prefix before every sequence; `enabled` False turns them off."""

    def __init__(self, model: torch.nn.Module, provider: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        """Hook `model`'s decoder; `provider(input_ids, attention_mask)` returns the (batch, L, hidden) prefix."""
        self.decoder, self.embed = model.get_decoder(), model.get_input_embeddings()
        self.provider, self.enabled = provider, True
        self.length = 0  # L of the sequences in the KV cache (decode steps extend their mask by it)
        self._strip: list[int] = []
        self.handles = [self.decoder.register_forward_pre_hook(self._before, with_kwargs=True),
                        self.decoder.register_forward_hook(self._after, with_kwargs=True)]

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The bare model inside the block (e.g. the base model's scores, or a query forward)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def _before(self, module, args, kwargs):
        if not self.enabled:
            self._strip.append(0)
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5.x names it `cache`
        filled = cache is not None and cache.get_seq_length() > 0
        if filled:  # a decode step: the prefix is in the cache already
            L = self.length
            kwargs = dict(kwargs)
        else:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                embeds = self.embed(ids)
            if mask is None:
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            prefix = self.provider(ids, mask).to(embeds.dtype)
            L = self.length = prefix.shape[1]
            kwargs = {k: v for k, v in kwargs.items() if k != "input_ids"}
            args = ()
            kwargs["inputs_embeds"] = torch.cat([prefix, embeds], dim=1)
        if mask is not None:
            kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], L), mask], dim=1)
        if kwargs.get("position_ids") is not None:
            pos = kwargs["position_ids"]
            head = torch.arange(L, device=pos.device).expand(pos.shape[0], L) if not filled else pos[:, :0]
            kwargs["position_ids"] = torch.cat([head, pos + L], dim=1)
        if kwargs.get("cache_position") is not None:
            cp = kwargs["cache_position"]
            kwargs["cache_position"] = torch.cat([torch.arange(L, device=cp.device), cp + L]) if not filled else cp + L
        self._strip.append(0 if filled else L)
        return args, kwargs

    def _after(self, module, args, kwargs, output):
        L = self._strip.pop()
        if L:
            output.last_hidden_state = output.last_hidden_state[:, L:]
            if getattr(output, "hidden_states", None) is not None:
                output.hidden_states = tuple(h[:, L:] for h in output.hidden_states)
        return output

    def remove(self) -> None:
        """Take the hooks off the decoder."""
        for h in self.handles:
            h.remove()
