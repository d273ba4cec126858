"""`make reproduce [REPRO=quick|full]`: regenerate the README's tables and figures with the analysis/ scripts.

`full` runs the published budgets (the 8-task, 3-seed methods table, the suite learnability table,
the mode-connectivity table and figure, the I-LoRA sensitivity table) into results/ and figures/;
runs are named by config hash, so finished ones are reused and interrupted ones resume. `quick`
runs the same scripts at reduced budgets (stated in the output) into results/quick/ and
figures/quick/, within about half an hour on 2 cores.
    python analysis/reproduce.py [--mode quick|full] [--jobs 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

from common import ROOT, train_run

SEQ_CONFIG = "configs/tiny-suite-seq.yaml"


@dataclass(frozen=True)
class Budget:
    """What one mode runs."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_examples: int
    mc_steps: int  # steps per task of the seq run whose consecutive minima are swept
    mc_points: int
    mc_limit: int
    mc_pairs: int
    sensitivity_tasks: str | None  # None: the sensitivity sweep is skipped
    out: str  # results (and figures) sub-folder: "" for the published files


MODES = {
    "full": Budget(("ilora", "agem", "er", "ewc", "olora", "seq", "one", "mtl"), (0, 1, 2), 100, 100, 200, 6, 50, 4,
                   "fomc, meeting, arith", ""),
    "quick": Budget(("seq", "er", "ilora", "one"), (0,), 20, 30, 20, 5, 30, 2, None, "quick"),
}


def _run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / "analysis" / script), *args]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _run_dir(method: str, seed: int, b: Budget, steps: int | None = None) -> str:
    """The run of one method and seed at the mode's budget (reused by hash when already trained)."""
    over = [f"method={method}", f"train.seed={seed}", f"train.steps_per_task={steps or b.steps}",
            f"eval.max_examples={b.eval_examples}"]
    if method in ("er", "agem", "ilora", "ilora-released"):
        over.append("method_args={buffer_size: 200}")
    return train_run(SEQ_CONFIG, over)


def main() -> None:
    """Run every analysis script at the mode's budget and say where the outputs went."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    b = MODES[a.mode]
    results = ROOT / "results" / b.out
    figures = ROOT / "figures" / b.out
    print(f"REPRO={a.mode}: methods {' '.join(b.methods)}, seeds {list(b.seeds)}, {b.steps} steps x 16 per task, "
          f"{b.eval_examples} eval examples per task; mode connectivity: seq at {b.mc_steps} steps, {b.mc_pairs} pairs, "
          f"{b.mc_points} points, {b.mc_limit} examples; sensitivity: {b.sensitivity_tasks or 'skipped'}; outputs in {results}, {figures}",
          flush=True)
    if a.mode == "quick":
        print("quick budgets are far below the published ones: numbers check the pipeline, not the claims", flush=True)
    t0 = time.time()
    _run("cl_comparison.py", "--methods", *b.methods, "--seeds", *map(str, b.seeds), "--steps", str(b.steps),
         "--eval-examples", str(b.eval_examples), "--jobs", str(a.jobs), "--out", str(results / "cl_comparison"))
    _run("suite_learnability.py", *[_run_dir("one", s, b) for s in b.seeds],
         "--out", str(results / "suite_learnability.md"))
    _run("mode_connectivity.py", _run_dir("seq", b.seeds[0], b, b.mc_steps), "--points", str(b.mc_points),
         "--limit", str(b.mc_limit), "--pairs", str(b.mc_pairs), "--out", str(results / "mode_connectivity"),
         "--figure", str(figures / "mode_connectivity.png"))
    if b.sensitivity_tasks:
        _run("ilora_sensitivity.py", "--tasks", b.sensitivity_tasks, "--seeds", *map(str, b.seeds[:1]),
             "--steps", str(b.steps), "--jobs", str(a.jobs), "--out", str(results / "ilora_sensitivity"))
    print(f"REPRO={a.mode} done in {(time.time() - t0) / 60:.1f} min: tables in {results}, figures in {figures}")


if __name__ == "__main__":
    main()
