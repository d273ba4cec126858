"""`TextFormat`: how a task example (prompt, answer) is joined into tokens — the config key `text`.

Only the description and its checks live here (no torch), so configs load without the tokeniser;
`mcl.data.tokenize` applies it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mcl.errors import MclError
from mcl.fields import documented

BOS_POLICIES = ("auto", "always", "never")


@dataclass
class TextFormat:
    """How prompt and answer are joined into tokens (config key `text`; the default is the ids join)."""

    separator: str | None = documented(None, "null: tokenise prompt and answer apart and join the ids; a string: "
                                              "join the texts with it and tokenise once")
    chat_template: bool = documented(False, "render prompt and answer with the tokenizer's chat template (user → "
                                            "assistant turn)")
    bos: str = documented("auto", "leading bos token: auto (the tokenizer's, unless it is a chat role marker) | "
                                  "always | never")

    def check(self) -> "TextFormat":
        """Raise MclError on an invalid combination; return self."""
        if self.bos not in BOS_POLICIES:
            raise MclError(f"text.bos must be one of {'|'.join(BOS_POLICIES)} (got {self.bos!r})")
        if self.separator is not None and not isinstance(self.separator, str):
            raise MclError(f"text.separator must be a string or null (got {self.separator!r})")
        if self.chat_template and self.separator is not None:
            raise MclError("text.separator and text.chat_template exclude each other: the template joins the turns")
        return self

    def is_default(self) -> bool:
        """Whether this is today's convention (then it is left out of run hashes and cache keys)."""
        return self == TextFormat()

    def describe(self) -> dict[str, Any]:
        """The format as a plain dict (configs, cache keys, mcl.json)."""
        return asdict(self)

    @property
    def joins_text(self) -> bool:
        """Whether prompt and answer are tokenised as one string (masked by offsets)."""
        return self.chat_template or self.separator is not None
