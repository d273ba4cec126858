"""Claims 1 and 2 of I-LoRA on our suite: linear paths between consecutive sequential LoRA minima.

For each consecutive pair of task checkpoints (k → k+1) of a finished run, sweep the straight
line in factor space and in delta space, scoring the old task k and the new task k+1 (loss and
task metric), and record: the loss barriers (claim 1: low-loss linear connectivity) and the best
interior trade-off, i.e. the t that maximises the mean metric of the two tasks (claim 2).
Writes results/mode_connectivity.{md,csv} and figures/mode_connectivity.png.
    python analysis/mode_connectivity.py RUN_DIR [--points 11] [--limit 100] [--learner slow] [--pairs N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mcl.adapters import read_adapter
from mcl.analysis import evaluators, path_barriers, sweep
from mcl.data import text_format
from mcl.io import atomic_path, write_text_atomic
from mcl.models import load_base
from mcl.paths import Linear
from mcl.train import task_dirs

ROOT = Path(__file__).resolve().parents[1]


def checkpoints(run_dir: Path, learner: str | None) -> list[tuple[str, Path]]:
    """(task name, adapter dir) per phase, in order."""
    out = []
    for d in task_dirs(run_dir):
        out.append((d.name.split("-", 1)[1], d / learner if learner else d))
    return out


def main() -> None:
    """Sweep every consecutive pair in both spaces; write the table and the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--points", type=int, default=11)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--learner", default=None, help="I-LoRA runs: slow or fast")
    p.add_argument("--spaces", nargs="+", default=["factors", "delta"])
    p.add_argument("--pairs", type=int, default=None, help="only the first N consecutive pairs")
    p.add_argument("--out", default=str(ROOT / "results" / "mode_connectivity"))
    p.add_argument("--figure", default=str(ROOT / "figures" / "mode_connectivity.png"))
    a = p.parse_args()
    run_dir = Path(a.run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    model, tok = load_base(cfg["model"])
    text = text_format(cfg.get("text"))  # score in the text format the run trained with (e.g. a chat template)
    ckpts = checkpoints(run_dir, a.learner)
    frames, rows = [], []
    for k in range(min(len(ckpts) - 1, a.pairs or len(ckpts))):
        (old, da), (new, db) = ckpts[k], ckpts[k + 1]
        tasks = evaluators(tok, [old, new], "eval", 50, cfg["train"]["max_len"], a.limit, text)
        A, B = read_adapter(da), read_adapter(db)
        for space in a.spaces:
            frame = sweep(Linear(A, B, space=space), model, tasks, a.points, metric=True, progress=False)
            frames.append(frame.assign(pair=f"{old}→{new}", role=frame["task"].map({old: "old", new: "new"})))
            res = path_barriers(frame)
            t = np.array(sorted(frame["t"].unique()))
            mean_metric = np.mean([res[old]["metric"], res[new]["metric"]], axis=0)
            best = int(np.argmax(mean_metric))
            rows.append({
                "pair": f"{old}→{new}", "space": space,
                "old_loss_barrier": res[old]["barrier"]["loss"]["max_minus_linear"],
                "new_loss_barrier": res[new]["barrier"]["loss"]["max_minus_linear"],
                "old_metric_drop": res[old]["barrier"]["metric"]["max_minus_linear"],
                "old_metric_t0": res[old]["metric"][0], "old_metric_t1": res[old]["metric"][-1],
                "new_metric_t0": res[new]["metric"][0], "new_metric_t1": res[new]["metric"][-1],
                "best_t": t[best], "best_mean_metric": mean_metric[best],
                "endpoint_mean_metric": max(mean_metric[0], mean_metric[-1]),
            })
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = Path(a.out)
    with atomic_path(out.with_suffix(".csv"), suffix=".csv") as tmp:
        pd.concat(frames).to_csv(tmp, index=False)
    md = ["# Linear paths between consecutive sequential minima", "", f"run: `{run_dir.name}` (model {cfg['model']}), "
          f"{a.points} points, {a.limit} eval examples per task", "", table.round(4).to_markdown(index=False), ""]
    write_text_atomic(out.with_suffix(".md"), "\n".join(md))
    plot(pd.concat(frames), Path(a.figure))


def plot(frame: pd.DataFrame, dest: Path) -> None:
    """One panel per pair: old/new task metric along t, solid = factors, dashed = delta."""
    from matplotlib.figure import Figure

    pairs = list(dict.fromkeys(frame["pair"]))
    fig = Figure(figsize=(3.2 * len(pairs), 3.0))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, pair in zip(axes, pairs):
        g = frame[frame["pair"] == pair]
        for (space, role), h in g.groupby(["space", "role"]):
            h = h.sort_values("t")
            ax.plot(h["t"], h["metric"], ls="-" if space == "factors" else "--", color="C0" if role == "old" else "C3",
                    label=f"{role} task ({space})")
        ax.set_title(pair, fontsize=9)
        ax.set_xlabel("t")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("task metric")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")


if __name__ == "__main__":
    main()
