"""I-LoRA sensitivity: λ ∈ {0.9, 0.99, 0.999}, γ ∈ {0, 0.1, 1}, buffer ∈ {50, 200, 500}.

`--grid ofat` (default) varies one factor at a time around mcl's defaults (λ 0.99, γ 1, buffer
200): 7 runs per seed; `--grid lxg` runs every λ × γ at buffer 200 (9 runs per seed) and draws the
λ × γ heatmap of OP (slow and fast learner, mean over seeds); `--grid full` runs all 27
combinations. Same tasks, budget and seeds for all; writes results/ilora_sensitivity/report.{md,csv}
via `mcl report` (and with lxg/full the heatmap, `--figure`, and its table, lambda_gamma.csv).
    python analysis/ilora_sensitivity.py [--tasks mcl-suite] [--seeds 0] [--steps 100] [--grid ofat|lxg|full]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from common import ROOT, report, train_grid

LAMBDAS, GAMMAS, BUFFERS = [0.9, 0.99, 0.999], [0.0, 0.1, 1.0], [50, 200, 500]
DEFAULT = (0.99, 1.0, 200)


def settings(grid: str) -> list[tuple[float, float, int]]:
    """(λ, γ, buffer) triples to run."""
    if grid == "full":
        return list(itertools.product(LAMBDAS, GAMMAS, BUFFERS))
    if grid == "lxg":
        return [(lam, gam, DEFAULT[2]) for lam, gam in itertools.product(LAMBDAS, GAMMAS)]
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
    p.add_argument("--grid", choices=["ofat", "lxg", "full"], default="ofat")
    p.add_argument("--figure", default=str(ROOT / "figures" / "ilora_lambda_gamma.png"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "ilora_sensitivity"))
    a = p.parse_args()
    grid = [[f"name=ilora-sens", f"tasks=[{a.tasks}]", "method=ilora", f"train.seed={s}",
             f"train.steps_per_task={a.steps}", f"eval.max_examples={a.eval_examples}",
             f"method_args={{ema_lambda: {lam}, consistency_weight: {gam}, buffer_size: {buf}}}"]
            for s in a.seeds for lam, gam, buf in settings(a.grid)]
    runs = train_grid("configs/tiny-suite-ilora.yaml", grid, a.jobs)
    report(runs, a.out)
    if a.grid != "ofat":
        heatmap(runs, Path(a.out), Path(a.figure))


def heatmap(runs: list[str], out: Path, figure: Path) -> None:
    """OP of the slow and the fast learner over λ × γ (buffer 200, mean over seeds): table and figure."""
    import json

    import pandas as pd
    from matplotlib.figure import Figure

    from mcl.io import atomic_path

    rows = []
    for run in map(Path, runs):
        args = json.loads((run / "method.json").read_text())["args"]
        summary = json.loads((run / "metrics" / "summary.json").read_text())
        if int(args["buffer_size"]) == DEFAULT[2]:
            rows.append({"lambda": args["ema_lambda"], "gamma": args["consistency_weight"],
                         "OP_slow": summary["score"]["OP"], "OP_fast": summary["score_fast"]["OP"]})
    table = pd.DataFrame(rows).groupby(["lambda", "gamma"]).mean().reset_index()
    with atomic_path(out / "lambda_gamma.csv", suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    for ax, col in zip(fig.subplots(1, 2), ("OP_slow", "OP_fast")):
        z = table.pivot(index="lambda", columns="gamma", values=col)
        im = ax.imshow(z.values, vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(z.columns)), [f"{g:g}" for g in z.columns])
        ax.set_yticks(range(len(z.index)), [f"{lam:g}" for lam in z.index])
        for (i, j), v in pd.DataFrame(z.values).stack().items():
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="black" if v > 0.5 else "white", fontsize=9)
        ax.set_xlabel("γ (consistency weight)")
        ax.set_ylabel("λ (EMA)")
        ax.set_title(f"{col.replace('_', ' (')} learner)", fontsize=10)
        fig.colorbar(im, ax=ax, label="OP (mean final score)")
    figure.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(figure, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")


if __name__ == "__main__":
    main()
