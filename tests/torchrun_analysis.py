"""Test helper, run under torchrun: `python tests/torchrun_analysis.py COMMANDS.json` runs mcl command lines in turn.

COMMANDS.json is a list of `mcl` argument lists; the first non-zero exit code ends the helper with it. Each
rank then prints how many (point, task) scores and eval examples it computed (the real functions, counted).
Last, one process's failure must fail every process: rank 1 raises inside `run_shared`, and each rank
prints the error it ends with.
"""

import importlib
import json
import sys

from mcl.analysis.distributed import ranks, run_shared
from mcl.cli.main import main
from mcl.errors import MclError
from mcl.eval.evaluate import TaskEvaluator

sweep = importlib.import_module("mcl.analysis.sweep")  # the module (mcl.analysis.sweep is also a function)
COUNTS = {"points": 0, "examples": 0}
_score, _parts = sweep._score, TaskEvaluator.example_parts


def _counted_score(*args, **kwargs):
    COUNTS["points"] += 1
    return _score(*args, **kwargs)


def _counted_parts(self, *args, **kwargs):
    COUNTS["examples"] += len(self.shard_index)
    return _parts(self, *args, **kwargs)


def _fail_on_rank_1() -> int:
    here = ranks()
    if here.rank == 1:
        raise MclError("rank 1 cannot go on")
    return here.rank


if __name__ == "__main__":
    sweep._score, TaskEvaluator.example_parts = _counted_score, _counted_parts
    for argv in json.loads(open(sys.argv[1]).read()):
        code = main(argv)
        if code:
            sys.exit(code)
    print(f"rank {ranks().rank} scored {COUNTS['points']} points and {COUNTS['examples']} examples", flush=True)
    try:
        run_shared(_fail_on_rank_1, ranks())
    except MclError as e:
        print(f"rank {ranks().rank} ended with: {e}", flush=True)
