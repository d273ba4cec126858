"""Sequence lengths that follow the data: how long a task's examples and prompts are uncut, and what a `max_len` cuts.

`TaskLengths.measure(tokenizer, name, examples, max_new_tokens, text)` tokenises a split once without any
limit (by the same text format as the loss and generation). From it, `needed(generate)` is the
smallest `max_len` that cuts nothing: the longest example (the loss), and when generating also the
longest prompt plus `max_new_tokens` (generation feeds a prompt of at most max_len − max_new_tokens
tokens). `cuts(max_len, generate)` says how many examples and prompts a given `max_len` would cut, as
one warning line (None when nothing is cut); a `max_len` that leaves no room for any prompt token
before the new tokens is a one-line MclError when generating, never a silent 1-token prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mcl.data.task import Example
from mcl.data.tokenize import TextFormat, encode_examples, encode_prompts
from mcl.errors import MclError

UNCUT = 1 << 40  # a max_len no example reaches: encodes without cutting


@dataclass(frozen=True)
class TaskLengths:
    """Uncut token counts of one example set: whole examples (prompt + answer + specials) and generation prompts."""

    name: str
    examples: tuple[int, ...]
    prompts: tuple[int, ...]
    max_new_tokens: int

    @classmethod
    def measure(cls, tokenizer, name: str, examples: Sequence[Example], max_new_tokens: int,
                text: TextFormat | None = None) -> "TaskLengths":
        """Tokenise `examples` without a length limit (one pass for the loss encoding, one for the prompts)."""
        full = encode_examples(tokenizer, examples, UNCUT, text)
        prompts = encode_prompts(tokenizer, [e.prompt for e in examples], UNCUT, text)
        return cls(name, tuple(len(e.input_ids) for e in full), tuple(len(p) for p in prompts), max_new_tokens)

    def needed(self, generate: bool) -> int:
        """The smallest max_len that cuts no example (and, when generating, no prompt before its new tokens)."""
        need = max(self.examples, default=1)
        if generate:
            need = max(need, max(self.prompts, default=0) + self.max_new_tokens)
        return max(need, 1)

    def cuts(self, max_len: int, generate: bool, split: str = "eval") -> str | None:
        """One warning line counting what `max_len` cuts, or None when it cuts nothing.

        When generating, a max_len that leaves no room for a prompt before the new tokens is a MclError.
        """
        room = max_len - self.max_new_tokens
        where = f"task {self.name} ({split} split)"
        if generate and room < 1:
            raise MclError(f"{where}: max_len {max_len} leaves no room for a prompt before max_new_tokens "
                           f"{self.max_new_tokens}; pass --max-len {self.needed(True)} (the longest prompt "
                           f"+ {self.max_new_tokens} new tokens) or more")
        said = []
        long = sum(n > max_len for n in self.examples)
        if long:
            said.append(f"{long} of {len(self.examples)} examples are longer than max_len {max_len} and lose "
                        "prompt tokens on the left (answers too when they alone do not fit)")
        cut = sum(n > room for n in self.prompts) if generate else 0
        if cut:
            said.append(f"{cut} of {len(self.prompts)} generation prompts are cut to {room} tokens "
                        f"(max_len {max_len} - max_new_tokens {self.max_new_tokens})")
        if not said:
            return None
        return f"{where}: {'; '.join(said)}; max_len {self.needed(generate)} keeps them whole"
