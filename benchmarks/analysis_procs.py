"""A barrier sweep on 2 CPU processes vs one process at the same total thread count (2 × 1 thread vs 1 × 2 threads).

Run: `python benchmarks/analysis_procs.py [--examples 64] [--tasks 4] [--points 11] [--repeats 3]`. It launches
itself as a worker three times: one process with 2 torch threads; `torchrun --nproc_per_node=2` (gloo) with
1 thread per process, where `sweep` splits its (point, task) units across the two (mcl.analysis.distributed);
and one process with 1 thread, the reference for both. Each worker builds the same tiny model (sweep_speed.py's:
the shipped weights when present, else a random model of that architecture), two random all-linear r=8
adapters and synthetic tasks, then times the whole sweep after one warm-up sweep (fastest of `--repeats`;
processes start together; the gather is included, model loading is not). Prints the three times, the speed
ratio of the first two and the largest loss difference between them (0 expected: each unit is computed the
same way in either setting).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    """Time the sweep in this process (one of the launched ones); the main process writes the result file."""
    import torch

    sys.path.insert(0, str(HERE))
    from sweep_speed import adapters, tiny_model

    from mcl.analysis import sweep
    from mcl.analysis.distributed import ranks, run_shared
    from mcl.data.task import Example, Task, TaskSpec
    from mcl.eval import TaskEvaluator
    from mcl.paths import Linear

    torch.set_num_threads(args.threads)
    here = ranks()
    model, tok, what = tiny_model()
    words = "alpha beta gamma delta def return class import value index count".split()
    tasks = []
    for k in range(args.tasks):
        rng = random.Random(k)
        examples = [Example(" ".join(rng.choice(words) for _ in range(40)),
                            " ".join(rng.choice(words) for _ in range(4))) for _ in range(args.examples)]
        tasks.append(TaskEvaluator(tok, Task(TaskSpec(f"synthetic{k}"), preloaded={"eval": examples}), "eval", 32, 64))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = adapters(model, Path(tmp))
    path = Linear(a, b)
    sweep(path, model, tasks, 2, cache=False, progress=False)  # warm-up: first forwards allocate and tune
    times, frame = [], None
    for _ in range(args.repeats):
        run_shared(lambda: None, here)  # start together
        t0 = time.perf_counter()
        frame = sweep(path, model, tasks, args.points, cache=False, progress=False)
        run_shared(lambda: None, here)
        times.append(time.perf_counter() - t0)
    if here.main:
        Path(args.result).write_text(json.dumps({"seconds": min(times), "loss": frame["loss"].tolist(), "model": what,
                                                 "processes": here.world, "threads": torch.get_num_threads()}))


def launch(args: argparse.Namespace, processes: int, threads: int, result: Path) -> dict:
    """Run the worker as `processes` processes of `threads` torch threads each; its result."""
    flags = ["--worker", "--threads", str(threads), "--result", str(result), "--examples", str(args.examples),
             "--tasks", str(args.tasks), "--points", str(args.points), "--repeats", str(args.repeats)]
    script = [str(Path(__file__).resolve()), *flags]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                             if processes > 1 else []), *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(result.read_text())


def main() -> None:
    """Launch both settings and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64, help="eval examples per task (default 64)")
    ap.add_argument("--tasks", type=int, default=4, help="synthetic tasks (default 4)")
    ap.add_argument("--points", type=int, default=11, help="sweep points (default 11)")
    ap.add_argument("--repeats", type=int, default=3, help="timed sweeps per setting; the fastest counts (default 3)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        runs = {setting: launch(args, *setting, Path(tmp) / f"{setting[0]}x{setting[1]}.json")
                for setting in ((1, 2), (2, 1), (1, 1))}
    one, two = runs[1, 2], runs[2, 1]
    diff = max(abs(x - y) for x, y in zip(one["loss"], two["loss"]))
    print(f"model: {one['model']}; {args.tasks} tasks x {args.examples} examples, {args.points} points, linear path, "
          f"factors space; fastest of {args.repeats}")
    print(f"{'setting':<28} {'sweep s':>8}")
    for (processes, threads), r in runs.items():
        print(f"{f'{processes} process(es) x {threads} thread(s)':<28} {r['seconds']:>8.2f}")
    print(f"speed-up of 2 processes x 1 thread over 1 process x 2 threads: {one['seconds'] / two['seconds']:.2f}x; "
          f"largest loss difference {diff:.1e}")

if __name__ == "__main__":
    main()
