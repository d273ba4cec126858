"""Config dataclass fields that carry their meaning: one help string per key, read by docs/config.md's generator
(`mcl.train.config_doc`) and `mcl train --help-config`. Imports nothing heavy."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


def documented(default: Any = dataclasses.MISSING, help: str = "", *,
               default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line `help` in its metadata."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})
