"""I-LoRA sensitivity: λ ∈ {0.9, 0.99, 0.999}, γ ∈ {0, 0.1, 1}, buffer ∈ {50, 200, 500}.

`--grid ofat` (default) varies one factor at a time around mcl's defaults (λ 0.99, γ 1, buffer
200): 7 runs per seed; `--grid full` runs all 27 combinations. Same tasks, budget and seeds for
all; writes results/ilora_sensitivity/report.{md,csv} via `mcl report`.
    python analysis/ilora_sensitivity.py [--tasks mcl-suite] [--seeds 0] [--steps 100] [--grid ofat|full]
"""

from __future__ import annotations

import argparse
import itertools

from common import ROOT, report, train_grid

LAMBDAS, GAMMAS, BUFFERS = [0.9, 0.99, 0.999], [0.0, 0.1, 1.0], [50, 200, 500]
DEFAULT = (0.99, 1.0, 200)


def settings(grid: str) -> list[tuple[float, float, int]]:
    """(λ, γ, buffer) triples to run."""
    if grid == "full":
        return list(itertools.product(LAMBDAS, GAMMAS, BUFFERS))
    lam, gam, buf = DEFAULT
    out = [(x, gam, buf) for x in LAMBDAS] + [(lam, x, buf) for x in GAMMAS] + [(lam, gam, x) for x in BUFFERS]
    return list(dict.fromkeys(out))


def main() -> None:
    """Run the chosen grid for each seed and report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="mcl-suite")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eval-examples", type=int, default=100)
    p.add_argument("--grid", choices=["ofat", "full"], default="ofat")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "ilora_sensitivity"))
    a = p.parse_args()
    grid = [[f"name=ilora-sens", f"tasks=[{a.tasks}]", "method=ilora", f"train.seed={s}",
             f"train.steps_per_task={a.steps}", f"eval.max_examples={a.eval_examples}",
             f"method_args={{ema_lambda: {lam}, consistency_weight: {gam}, buffer_size: {buf}}}"]
            for s in a.seeds for lam, gam, buf in settings(a.grid)]
    report(train_grid("configs/tiny-suite-ilora.yaml", grid, a.jobs), a.out)


if __name__ == "__main__":
    main()
