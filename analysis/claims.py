"""The README's Claims table: the paper's three claims at each scale, judged from the files in results/.

- C1, consecutive minima are joined by low-loss paths: for each consecutive pair of sequential LoRA
  checkpoints and each space, the larger of the old and the new task's loss barrier (max over the path
  minus the straight chord, nats per answer token). Holds if every barrier is ≤ 0.1, partly if some are.
- C2, interior points balance plasticity and stability: for each pair (factor space), the best mean
  task metric of old and new task at an interior point against the better endpoint. Holds if an interior
  point beats both endpoints by ≥ 0.02 in every pair, partly if in some, does not hold if in none.
- C3, I-LoRA beats prior methods: OP of I-LoRA's slow learner against ER and against the best other
  continual method (by mean OP; `one` and `mtl` are references, not competitors), each by a paired
  bootstrap over seeds and eval examples of the final per-example scores (95 % interval of the OP
  difference). Holds when both intervals lie above 0, does not hold when one lies below 0, otherwise
  (an interval that contains 0, or runs kept without per-example scores) it is inconclusive.
  Other I-LoRA variants in the results are listed beside it with their interval against ER.
  On the tiny model C3 is judged on the protocol's final grid (results/final_grid, the README's "Protocol
  for the next grids") with the variant chosen on the tuning stream (results/ilora_tuning/choice.json)
  once that grid has runs; before, on results/cl_comparison with I-LoRA λ 0.9. SmolLM2 likewise:
  results/smollm2/final_grid (60 steps per task, the chosen λ's window kept as the same share of a task).
Missing inputs are reported as not run. Writes results/claims.md.
    python analysis/claims.py
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from common import TUNED_STEPS, at_steps, run_name
from tables import label

from mcl.analysis import Bootstrap, interval_verdict, paired_op_difference, path_barriers
from mcl.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SCALES = {"tiny (5M, 8 tasks)": ROOT / "results", "SmolLM2-135M-Instruct (4 tasks)": ROOT / "results" / "smollm2"}
REFERENCES = {"one", "mtl"}
SMOL_FINAL_STEPS = 60  # steps per task of the SmolLM2 final grid (reproduce.py)


def _verdict(ok: list[bool]) -> str:
    return "holds" if ok and all(ok) else "partly" if any(ok) else "does not hold"


def c1_c2(points_csv: Path) -> tuple[str, str]:
    """Verdicts with their numbers for C1 and C2 from a mode_connectivity points file."""
    if not points_csv.is_file():
        return "not run", "not run"
    frame = pd.read_csv(points_csv)
    c1, c2, ok1, ok2 = [], [], [], []
    for (pair, space), g in frame.groupby(["pair", "space"], sort=False):
        res = path_barriers(g)
        worst = max(r["barrier"]["loss"]["max_minus_linear"] for r in res.values())
        ok1.append(worst <= 0.1)
        c1.append(f"{pair} ({space}) {worst:.2f}")
        if space == "factors":
            old, new = (next(t for t, r in g.groupby("task") if r["role"].iloc[0] == role) for role in ("old", "new"))
            mean = np.mean([res[old]["metric"], res[new]["metric"]], axis=0)
            gain = float(mean[1:-1].max() - max(mean[0], mean[-1])) if len(mean) > 2 else float("nan")
            ok2.append(gain >= 0.02)
            c2.append(f"{pair} {gain:+.2f} (t={res[old]['t'][1 + int(np.argmax(mean[1:-1]))]:.1f})")
    return (f"**{_verdict(ok1)}**: worst loss barrier per pair (nats/token) {'; '.join(c1)}",
            f"**{_verdict(ok2)}**: best interior mean metric minus best endpoint {'; '.join(c2)}")


def _summaries(results: Path) -> pd.DataFrame:
    """OP of every kept run (results/<...>/runs/<variant>-seed<s>/summary.json): columns variant, seed, OP, label, dir."""
    rows = []
    for f in sorted(results.glob("*/runs/*/summary.json")) + sorted(results.glob("runs/*/summary.json")):
        if f.parents[2].name.endswith("_run"):  # a figure's own run (e.g. ilora_plane_run), not a comparison
            continue
        variant, _, seed = f.parent.name.rpartition("-seed")
        spec = f.parent / "spec.txt"
        rows.append({"variant": variant, "seed": int(seed), "OP": json.loads(f.read_text())["score"]["OP"],
                     "label": label(spec.read_text().strip()) if spec.exists() else variant, "dir": str(f.parent)})
    return pd.DataFrame(rows, columns=["variant", "seed", "OP", "label", "dir"])


@lru_cache(maxsize=None)
def final_scores(run: str) -> dict[str, np.ndarray] | None:
    """Per-example final scores of a kept run's primary view, by task (None when the run kept none)."""
    summary = json.loads((Path(run) / "summary.json").read_text())
    files = sorted((Path(run) / "examples").glob("phase-*.csv.gz"), key=lambda f: int(f.name[6:].split(".")[0]))
    if not files:
        return None
    frame = pd.read_csv(files[-1])
    frame = frame[frame.view == summary.get("primary_view", "main")].sort_values(["task", "example"])
    return {task: g["score"].to_numpy(float) for task, g in frame.groupby("task")}


def compare(ops: pd.DataFrame, a: str, b: str) -> dict | None:
    """Paired bootstrap of OP(a) − OP(b) over the seeds both kept per-example scores for (None if none)."""
    runs = {v: {int(r.seed): final_scores(r.dir) for r in ops[ops.variant == v].itertuples()} for v in (a, b)}
    seeds = [s for s in runs[a] if s in runs[b] and runs[a][s] is not None and runs[b][s] is not None]
    if not seeds:
        return None
    return paired_op_difference({s: runs[a][s] for s in seeds}, {s: runs[b][s] for s in seeds},
                                Bootstrap(replicates=2000))


def _interval(res: dict | None, ops: pd.DataFrame, a: str, b: str) -> str:
    """The 95 % interval of OP(a) − OP(b), or (runs kept without per-example scores) the per-seed differences."""
    if res is None:
        op = {v: ops[ops.variant == v].set_index("seed")["OP"] for v in (a, b)}
        diffs = [f"{op[a][s] - op[b][s]:+.3f}" for s in sorted(set(op[a].index) & set(op[b].index))]
        return f"per seed {', '.join(diffs)} (no per-example scores kept: no interval)"
    n = len(res["seeds"])
    return f"{res['diff']:+.3f} [{res['low']:+.3f}, {res['high']:+.3f}] ({n} seed{'s' * (n > 1)})"


def c3(results: Path, ilora: str) -> str:
    """Verdict with numbers (95 % paired-bootstrap intervals) for C3 from the kept runs of one scale."""
    ops = _summaries(results).drop_duplicates(["variant", "seed"])
    mine = ops[ops.variant == ilora].set_index("seed")["OP"]
    er_name = "er" if (ops.variant == "er").any() else None  # plain ER; a control (er_...) is another method
    if mine.empty or er_name is None:
        return "not run"
    others = ops[~ops.variant.isin(REFERENCES | {ilora}) & ~ops.variant.str.startswith("ilora")]
    means = others.groupby("variant")["OP"].mean()
    best = means.idxmax()
    tests = {"ER": compare(ops, ilora, er_name)}
    if best != er_name:
        tests[f"best other ({best})"] = compare(ops, ilora, best)
    verdict = "inconclusive" if any(r is None for r in tests.values()) else interval_verdict(
        [(r["low"], r["high"]) for r in tests.values()])
    names = dict(zip(ops.variant, ops.label))
    view = json.loads((Path(ops[ops.variant == ilora].iloc[0].dir) / "summary.json").read_text()).get("primary_view", "main")
    learner = {"slow": "slow learner", "fast": "fast learner"}.get(view, view)
    text = (f"**{verdict}**: {names[ilora]}: OP {mine.mean():.3f} ({learner}, {len(mine)} seed{'s' * (len(mine) > 1)}); "
            f"I-LoRA − ER {_interval(tests['ER'], ops, ilora, er_name)}")
    text += f"; best other method {names[best]} {means[best]:.3f}"
    if len(tests) > 1:
        text += f", I-LoRA − it {_interval(tests[f'best other ({best})'], ops, ilora, best)}"
    for name in sorted(v for v in ops.variant.unique() if v.startswith("ilora") and v != ilora):
        op = ops[ops.variant == name]["OP"]
        text += f"; variant {names[name]}: OP {op.mean():.3f}, − ER {_interval(compare(ops, name, er_name), ops, name, er_name)}"
    return text


def c3_source(results: Path, old: tuple[Path, str], steps: int) -> tuple[Path, str]:
    """(kept runs dir, I-LoRA variant) for one scale's C3: its final grid with the tuned choice once it has runs."""
    grid, choice = results / "final_grid", ROOT / "results" / "ilora_tuning" / "choice.json"
    if choice.is_file() and any(grid.glob("runs/*/summary.json")):
        return grid, run_name(at_steps(json.loads(choice.read_text())["chosen_spec"], steps))
    return old


def main() -> None:
    """Judge every claim at every scale and write results/claims.md."""
    lines = ["| claim | " + " | ".join(SCALES) + " |", "|---|" + "---|" * len(SCALES)]
    cells = {}
    for scale, results in SCALES.items():
        c1, c2 = c1_c2(results / "mode_connectivity.csv")
        tiny = scale.startswith("tiny")
        source, ilora = c3_source(results, (results / "cl_comparison", "ilora_ema_lambda0.9") if tiny else (results, "ilora"),
                                  TUNED_STEPS if tiny else SMOL_FINAL_STEPS)
        cells[scale] = (c1, c2, c3(source, ilora))
    names = ["C1: consecutive minima are joined by low-loss paths", "C2: interior points balance plasticity and stability",
             "C3: I-LoRA beats prior methods"]
    for k, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(cells[s][k] for s in SCALES) + " |")
    text = "\n".join(["# The paper's claims at two scales", "", *lines, ""])
    write_text_atomic(ROOT / "results" / "claims.md", text)
    print(text)


if __name__ == "__main__":
    main()
