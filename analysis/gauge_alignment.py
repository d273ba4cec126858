"""Factor-space barriers before and after LoRA gauge alignment, on SeqFT pairs and on gauge twins.

For each consecutive pair of a sequential run's task adapters (scored on both tasks) and for the
first adapter with its sign-flipped twin (−A, −B) and rescaled twin (−3A, −B/3) (same ΔW; scored on
its task), the linear factor-space path is searched adaptively (`--points auto`, ≤ 15 points per task)
with alignment none / svd / procrustes. Prints the table; writes figures/gauge_alignment.png (loss along
each path per alignment) and results/gauge_alignment.csv.
    python analysis/gauge_alignment.py RUN_DIR [--limit 50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mcl.adapters import AdapterState, read_adapter
from mcl.analysis import evaluators, path_barriers, sweep
from mcl.analysis.plots import save_png
from mcl.io import atomic_path
from mcl.models import load_base
from mcl.paths import ALIGNERS, Linear, align
from mcl.paths.lora_math import lora_terms
from mcl.train import task_dirs

ROOT = Path(__file__).resolve().parents[1]


def twin(state: AdapterState, scale: float) -> AdapterState:
    """(−scale·A, −B/scale): the same ΔW per module."""
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        tensors[term.a_key] = -scale * state.tensors[term.a_key]
        tensors[term.b_key] = -state.tensors[term.b_key] / scale
    return AdapterState(dict(state.config), tensors, meta=dict(state.meta))


def main() -> None:
    """Run every case under every alignment; print, plot and save."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--limit", type=int, default=50, help="eval examples per task")
    args = p.parse_args()
    dirs = task_dirs(args.run_dir)
    states = [read_adapter(d) for d in dirs]
    model, tok = load_base(states[0].base_model)
    names = [s.meta["task"] for s in states]
    tasks = dict(zip(names, evaluators(tok, names, "eval", 50, 256, args.limit)))
    cases = {f"{x.meta['task']}→{y.meta['task']}": (x, y) for x, y in zip(states, states[1:])}
    cases.update({f"{names[0]} twin (−A,−B)": (states[0], twin(states[0], 1.0)),
                  f"{names[0]} twin (−3A,−B/3)": (states[0], twin(states[0], 3.0))})
    rows, curves = [], []
    for case, (x, y) in cases.items():
        on = [tasks[x.meta["task"]]] + ([tasks[y.meta["task"]]] if y.meta["task"] != x.meta["task"] else [])
        for method in ALIGNERS:
            frame = sweep(Linear(*align([x, y], method), space="factors"), model, on, "auto", cache=False,
                          progress=False, merged=True)
            curves.append(frame.assign(case=case, align=method))
            for task, r in path_barriers(frame).items():
                rows.append({"case": case, "task": task, "align": method, "points": len(r["t"]),
                             "barrier": r["barrier"]["loss"]["max_minus_linear"], "argmax_t": r["barrier"]["loss"]["argmax_t"]})
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["case", "task"], columns="align", values="barrier", sort=False)[list(ALIGNERS)]
    print("factor-space loss barrier (max above chord, nats), adaptive search:")
    print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    (ROOT / "results").mkdir(exist_ok=True)
    with atomic_path(ROOT / "results" / "gauge_alignment.csv") as tmp:
        table.to_csv(tmp, index=False)
    frames = pd.concat(curves, ignore_index=True)
    fig = Figure(figsize=(4.2 * len(cases), 3.6), layout="constrained")
    for k, case in enumerate(cases):
        ax = fig.add_subplot(1, len(cases), k + 1)
        for (method, task), g in frames[frames.case == case].groupby(["align", "task"], sort=False):
            g = g.sort_values("t")
            ax.plot(g["t"], g["loss"], marker="o", ms=3, label=f"{task}, {method}")
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("t (factor space)")
        ax.set_ylabel("loss (nats / answer token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_png(fig, ROOT / "figures" / "gauge_alignment.png")
    print("wrote figures/gauge_alignment.png, results/gauge_alignment.csv")


if __name__ == "__main__":
    main()
