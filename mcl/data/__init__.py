"""Tasks: formats, the built-in offline suite, tokenisation and collation.

- `task`: `Example`, `TaskSpec`, `Task`, reading TRACE-format dirs (.json / .jsonl splits + task.json)
- `load`: `load_task(name_or_path)`, `load_tasks(names)` (built-in names and `mcl-suite`)
- `suite`: the 8-task offline suite `mcl-suite` (shipped in `mcl/data/assets`) and its recipe `build_suite`
- `tokenize`: the loss convention (docs/design.md §3) and `TextFormat` (separator, chat template, bos policy),
  right-padded `collate`, left-padded `collate_prompts`
- `sources`: offline text shared with the tiny model's pretraining (stdlib split)

Metrics and evaluation live in `mcl.eval`. Names load lazily (PEP 562), so reading tasks and the
shipped suite needs neither torch nor transformers (only `tokenize` imports torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_task": "load", "load_tasks": "load",
    "SUITE": "suite", "SUITE_NAME": "suite", "build_suite": "suite", "ensure_suite": "suite",
    "Sizes": "suite.common",
    "SPLITS": "task", "Example": "task", "Task": "task", "TaskSpec": "task", "read_examples": "task",
    "IGNORE": "tokenize", "Encoded": "tokenize", "collate": "tokenize", "collate_prompts": "tokenize",
    "encode_examples": "tokenize", "encode_prompts": "tokenize", "pad_id": "tokenize",
    "TextFormat": "text", "text_format": "tokenize", "text_meta": "tokenize",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mcl.data.{_EXPORTS[name]}"), name)
