"""Config dataclass fields that carry their meaning: one help string per key, read by docs/config.md's generator
(`mcl.train.config_doc`) and `mcl train --help-config`. Imports nothing heavy."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


def documented(default: Any = dataclasses.MISSING, help: str = "", *,
               default_factory: Callable[[], Any] | Any = dataclasses.MISSING, changes_results: bool = True) -> Any:
    """A dataclass field with a one-line `help` in its metadata; `changes_results=False` marks a setting that
    changes no result (where output goes, how often it logs, batch size of scoring), left out of report labels."""
    metadata = {"help": help, "changes_results": changes_results}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
