"""I-LoRA's design space on the tuning stream, and the variant the final grids run (the README's protocol).

The tuning stream is the suite's first 3 tasks with seeds 0 and 1 (A-GEM's protocol: tune on a prefix
of the stream); 100 steps × 16 per task, buffer 200, 100 eval examples per task, as the final grid.
Every variant below runs there beside ER; the I-LoRA variant with the best mean OP (its primary view:
the slow learner, or the fast one for the released presets) is chosen for the final 8-task grids. The
table, every run's kept files and the choice with its numbers go to results/ilora_tuning/. Nothing is
chosen on the final grid's scores.
    python analysis/ilora_tuning.py [--seeds 0 1] [--steps 100] [--jobs 2] [--existing-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import ROOT, run_name

from mcl.io import write_json_atomic, write_text_atomic

TASKS = "stance, fomc, meeting"  # the suite's first 3 tasks
VARIANTS = {  # label -> cl_comparison method spec; windows 1/(1-λ) at 100 steps per task
    "ER (reference)": "er",
    "window 10 %, γ 0": "ilora:ema_lambda=0.9,consistency_weight=0",
    "window 25 %, γ 0": "ilora:ema_lambda=0.96,consistency_weight=0",
    "window 50 %, γ 0": "ilora:ema_lambda=0.98,consistency_weight=0",
    "window 10 %, γ 0.1, max target (tiny config)": "ilora:ema_lambda=0.9,consistency_weight=0.1",
    "max target on the last (normed) layer, γ 1": "ilora:ema_lambda=0.9,layers=last",
    "consistency on logits, max target, γ 1": "ilora:ema_lambda=0.9,consistency_on=logits",
    "plain MSE to the slow learner's last hidden state, γ 1": "ilora:ema_lambda=0.9,consistency_target=slow,layers=last",
    "constant learning rate, γ 0.1": "ilora:ema_lambda=0.9,consistency_weight=0.1,train.lr_schedule=constant",
    "slow learner placed by the path search, γ 0.1": "ilora:placement=search,consistency_weight=0.1",
    "ilora-released (λ 0.25, fast learner)": "ilora-released",
    "ilora-as-released (slow learner stuck at the base)": "ilora-as-released",
    # a control added after the first tuning table, before any final run: the chosen variant changed the
    # schedule too, so ER with the same schedule tells the schedule's share from I-LoRA's (never a candidate)
    "ER, constant learning rate (control)": "er:train.lr_schedule=constant",
}


def choose(summaries: dict[tuple[str, int], dict]) -> dict:
    """The best I-LoRA variant by mean OP over the tuning seeds, with every variant's numbers."""
    table = {}
    for label, spec in VARIANTS.items():
        ops = {s: summaries[(spec, s)]["score"]["OP"] for (v, s) in summaries if v == spec}
        if ops:
            table[label] = {"spec": spec, "OP_mean": float(np.mean(list(ops.values()))), "OP_per_seed": ops}
    candidates = {k: v for k, v in table.items() if v["spec"].startswith("ilora")}
    best = max(candidates, key=lambda k: candidates[k]["OP_mean"]) if candidates else None
    return {"chosen": best, "chosen_spec": table[best]["spec"] if best else None, "variants": table}


def main() -> None:
    """Run (or reuse) every variant on the tuning stream, then write the table and the choice."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", default=["0", "1"])
    p.add_argument("--steps", default="100")
    p.add_argument("--jobs", default="2")
    p.add_argument("--existing-only", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "ilora_tuning"))
    a = p.parse_args()
    cmd = [sys.executable, str(ROOT / "analysis" / "cl_comparison.py"), "--methods", *VARIANTS.values(), "--seeds",
           *a.seeds, "--steps", a.steps, "--tasks", TASKS, "--jobs", a.jobs, "--out", a.out]
    subprocess.run(cmd + (["--existing-only"] if a.existing_only else []), check=True, cwd=ROOT)
    out = Path(a.out)
    summaries = {}
    for spec in VARIANTS.values():
        for seed in a.seeds:
            d = out / "runs" / f"{run_name(spec)}-seed{seed}"
            if (d / "summary.json").is_file():
                summaries[(spec, int(seed))] = json.loads((d / "summary.json").read_text())
    choice = choose(summaries)
    write_json_atomic(out / "choice.json", choice)
    lines = ["| variant | OP (mean over seeds) | per seed |", "|---|---|---|"]
    for label, v in sorted(choice["variants"].items(), key=lambda kv: -kv[1]["OP_mean"]):
        mark = " **(chosen)**" if label == choice["chosen"] else ""
        lines.append(f"| {label}{mark} | {v['OP_mean']:.3f} | {', '.join(f'{x:.3f}' for x in v['OP_per_seed'].values())} |")
    write_text_atomic(out / "tuning.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
