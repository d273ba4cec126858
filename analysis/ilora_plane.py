"""The loss plane through consecutive fast-learner minima and the I-LoRA slow learner, with both trajectories.

Anchors (factor space): a = fast learner after task k−1 (θ_{k−1}), b = fast learner after task k (θ_k),
c = slow learner after task k. The fast and slow snapshots saved while task k trained
(`method_args.snapshot_every`) are projected onto the plane (their distance from it is kept), and the
loss of tasks k−1 and k is drawn over it. Without RUN_DIR it trains (or reuses, by hash) a tiny I-LoRA
run on the suite's first three tasks with snapshots every 10 steps.
    python analysis/ilora_plane.py [RUN_DIR] [--task 1] [--grid 9] [--limit 50] [--steps 100]
Writes OUT.csv (grid), OUT_trajectories.csv, OUT.md, the figure, and the run's R matrices under OUT_run/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from cl_comparison import keep_runs
from common import ROOT, train_run
from mcl.adapters import read_adapter
from mcl.analysis import evaluators, plane, plot_plane, snapshot_trajectories, sweep
from mcl.data import text_format
from mcl.io import atomic_path, write_text_atomic
from mcl.models import load_base
from mcl.paths import Linear
from mcl.train import task_dirs


def main() -> None:
    """Train or read the run, score the plane, write the tables and the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--task", type=int, default=1, help="k: the plane of task k-1 -> k (default 1)")
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--limit", type=int, default=50, help="eval examples per task")
    p.add_argument("--steps", type=int, default=100, help="steps per task of the tiny run trained without RUN_DIR")
    p.add_argument("--out", default=str(ROOT / "results" / "ilora_plane"))
    p.add_argument("--figure", default=str(ROOT / "figures" / "ilora_plane.png"))
    a = p.parse_args()
    run_dir = Path(a.run_dir or train_run("configs/tiny-suite-ilora.yaml", [
        "tasks=[stance, fomc, meeting]", f"train.steps_per_task={a.steps}", "eval.max_examples=50",
        "method_args={ema_lambda: 0.9, consistency_weight: 1.0, buffer_size: 200, snapshot_every: 10}"]))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    dirs = task_dirs(run_dir)
    prev, cur = dirs[a.task - 1], dirs[a.task]
    anchors = read_adapter(prev / "fast"), read_adapter(cur / "fast"), read_adapter(cur / "slow")
    model, tok = load_base(cfg["model"])
    names = [d.name.split("-", 1)[1] for d in (prev, cur)]
    tasks = evaluators(tok, names, "eval", 50, cfg["train"]["max_len"], a.limit, text_format(cfg.get("text")))
    pl = plane(*anchors, model, tasks, grid=a.grid, space="factors", progress=False,
               trajectories=snapshot_trajectories(cur, start=prev))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    traj = pd.concat([t.assign(learner=name) for name, t in pl.trajectories.items()])
    for frame, dest in ((pl.frame, out.with_suffix(".csv")), (traj, out.parent / f"{out.name}_trajectories.csv")):
        with atomic_path(dest, suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False)
    ends = {n: (x, y) for n, (x, y) in pl.anchors.items()}
    lines = [f"# I-LoRA on the loss plane: {names[0]} → {names[1]}", "",
             f"run `{run_dir.name}` (model {cfg['model']}); a = fast after {names[0]}, b = fast after {names[1]}, "
             f"c = slow after {names[1]}; factor space, {a.grid}×{a.grid} grid, {a.limit} eval examples per task.", "",
             "Anchors (x, y): " + ", ".join(f"{n} ({x:.3f}, {y:.3f})" for n, (x, y) in ends.items()), "",
             "Loss at the anchors (nats per answer token):", "",
             _anchor_losses(anchors, model, tasks).to_markdown(), "",
             "Trajectory snapshots (x, y, distance from the plane):", "",
             traj.round(4).to_markdown(index=False), ""]
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines))
    keep_runs([(f"ilora_plane-{cfg['model']}", 0)], [str(run_dir)], out.parent / f"{out.name}_run")  # its R, summary
    Path(a.figure).parent.mkdir(parents=True, exist_ok=True)
    plot_plane(pl, png=a.figure)
    print(f"wrote {out}.md/.csv, {a.figure}")


def _anchor_losses(anchors, model, tasks) -> pd.DataFrame:
    """Each task's loss at a, b and c, evaluated exactly (the ends of the lines a→b and a→c)."""
    a, b, c = anchors
    ab = sweep(Linear(a, b), model, tasks, [0.0, 1.0], progress=False)
    ac = sweep(Linear(a, c), model, tasks, [1.0], progress=False)
    table = ab.pivot_table(index="task", columns="t", values="loss").rename(columns={0.0: "a", 1.0: "b"})
    table["c"] = ac.set_index("task")["loss"]
    return table.round(4)


if __name__ == "__main__":
    main()
