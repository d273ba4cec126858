"""Table: each suite task's score before LoRA and after single-task LoRA, against its chance level.

Reads `one` runs (a fresh LoRA per task, same budget as the CL comparison): the base model's
scores (metrics/base.json) and each task's score with its own adapter (the diagonal of R), on the
eval split; with several seeds, mean ± std. Chance = random train answers scored on the split.
    python analysis/suite_learnability.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mcl.data import SUITE
from mcl.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Print and write results/suite_learnability.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=str(ROOT / "results" / "suite_learnability.md"))
    a = p.parse_args()
    after, base, info = {}, {}, {}
    for run in map(Path, a.runs):
        b = json.loads((run / "metrics" / "base.json").read_text())
        R = pd.read_csv(run / "metrics" / "R.csv", index_col=0)
        for i, task in enumerate(R.columns):
            after.setdefault(task, []).append(R.iloc[i][task])
            base.setdefault(task, []).append(b[task]["metric"])
            info[task] = b[task]
    rows = []
    for task in after:
        spec = SUITE[task].spec if task in SUITE else None
        rows.append({
            "task": task, "metric": info[task]["metric_name"], "chance": round(info[task]["chance"], 3),
            "base (no LoRA)": f"{np.mean(base[task]):.3f}",
            "single-task LoRA": f"{np.mean(after[task]):.3f} ± {np.std(after[task]):.3f}",
            "above chance by": f"{np.mean(after[task]) - info[task]['chance']:+.3f}",
            "answer format": spec.answer_format if spec else "",
        })
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    write_text_atomic(a.out, f"# Suite learnability ({len(a.runs)} run(s))\n\n{table}\n")


if __name__ == "__main__":
    main()
