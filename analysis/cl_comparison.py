"""Table: every continual-learning method on the tiny 8-task suite, several seeds, one budget.

Runs each (method, seed) with the same steps, batch, buffer and LoRA settings (base config:
configs/tiny-suite-seq.yaml), two runs at a time with one thread each, then writes
results/cl_comparison/report.{md,csv} (final scores, OP/BWT/FWT/forgetting, mean ± std over
seeds) and R heatmaps via `mcl report`. Finished runs are reused (runs are named by config hash).
    python analysis/cl_comparison.py [--methods ...] [--seeds 0 1 2] [--steps 100] [--jobs 2]
The README's table: `--methods ilora agem er ewc olora seq one mtl --steps 100` (about 2.5 h on 2 cores).
"""

from __future__ import annotations

import argparse

from common import ROOT, report, train_grid

METHODS = ["seq", "er", "ewc", "agem", "olora", "mtl", "one", "ilora", "ilora-released"]
REPLAY = {"er", "agem", "ilora", "ilora-released"}


def main() -> None:
    """Run the grid, then `mcl report` over all runs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--buffer", type=int, default=200)
    p.add_argument("--eval-examples", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "cl_comparison"))
    a = p.parse_args()
    grid = []  # method-major, in the order given: put the longest (ilora, agem, er) first for an even tail
    for m in a.methods:
        for seed in a.seeds:
            over = [f"method={m}", f"train.seed={seed}", f"train.steps_per_task={a.steps}",
                    f"eval.max_examples={a.eval_examples}"]
            grid.append(over + ([f"method_args={{buffer_size: {a.buffer}}}"] if m in REPLAY else []))
    report(train_grid("configs/tiny-suite-seq.yaml", grid, a.jobs), a.out)


if __name__ == "__main__":
    main()
