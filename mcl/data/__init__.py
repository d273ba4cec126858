"""Tasks: formats, the built-in offline suite, tokenisation and collation.

- `task`: `Example`, `TaskSpec`, `Task`, reading TRACE-format dirs (.json / .jsonl splits + task.json)
- `load`: `load_task(name_or_path)`, `load_tasks(names)` (built-in names and `mcl-suite`)
- `suite`: the 8-task offline suite `mcl-suite` and `build_suite`
- `tokenize`: the loss convention (docs/design.md §3), right-padded `collate`, left-padded `collate_prompts`
- `sources`: offline text shared with the tiny model's pretraining (stdlib split)

Metrics and evaluation live in `mcl.eval`.
"""

from mcl.data.load import load_task, load_tasks
from mcl.data.suite import SUITE, SUITE_NAME, build_suite, ensure_suite
from mcl.data.suite.common import Sizes
from mcl.data.task import SPLITS, Example, Task, TaskSpec, read_examples
from mcl.data.tokenize import IGNORE, Encoded, collate, collate_prompts, encode_examples, encode_prompts, pad_id

__all__ = [
    "IGNORE", "SPLITS", "SUITE", "SUITE_NAME", "Encoded", "Example", "Sizes", "Task", "TaskSpec", "build_suite",
    "collate", "collate_prompts", "encode_examples", "encode_prompts", "ensure_suite", "load_task", "load_tasks",
    "pad_id", "read_examples",
]
