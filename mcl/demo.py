"""`make demo`: the quick reproduction, end to end on the tiny model, through the user-facing CLI.

1. the shipped tiny model: held-out loss vs the uniform loss;
2. the offline 8-task suite and the base model's scores on it;
3. `seq` and `ilora` runs over the 8 tasks (a short budget) and their report (OP/BWT, R heatmaps);
4. the loss along the straight line between the first two `seq` checkpoints (mcl-barrier, factor vs
   delta space); `mcl barrier-matrix RUN_DIR` does all pairs (slower: 28 pairs for 8 tasks).
Outputs go to out/demo/. Set MCL_DEMO_STEPS to change the per-task budget (default 40).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mcl.cli.main import main as mcl

OUT = Path("out/demo")


def _run(argv: list[str]) -> None:
    print(f"\n$ mcl {' '.join(argv)}", flush=True)
    if mcl(argv) != 0:
        sys.exit(f"demo step failed: mcl {' '.join(argv)}")


def _run_dir(config: str, overrides: list[str]) -> Path:
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir

    return resolve_run_dir(load_config(config, overrides))


def main() -> None:
    """Run the demo steps; each prints what it measured."""
    t0 = time.time()
    steps = os.environ.get("MCL_DEMO_STEPS", "40")
    OUT.mkdir(parents=True, exist_ok=True)
    print("== 1. tiny model (shipped weights, pretrained offline on Python stdlib text)")
    _run(["models", "info", "tiny", "--heldout"])
    print("\n== 2. the offline suite and the base model's scores (eval split, 50 examples per task)")
    _run(["eval", "--model", "tiny", "--tasks", "mcl-suite", "--limit", "50", "--out", str(OUT / "base_scores.json")])
    print(f"\n== 3. continual LoRA over 8 tasks: seq vs ilora ({steps} steps per task)")
    common = [f"train.steps_per_task={steps}", "eval.max_examples=40", "--quiet"]
    runs = []
    for config in ("configs/tiny-suite-seq.yaml", "configs/tiny-suite-ilora.yaml"):
        _run(["train", config, *common])
        runs.append(str(_run_dir(config, [c for c in common if "=" in c])))
    _run(["report", *runs, "--out", str(OUT / "report")])
    print("\n== 4. mode connectivity between consecutive seq checkpoints")
    tasks = sorted((Path(runs[0]) / "tasks").iterdir(), key=lambda p: int(p.name.split("-")[0]))
    for space in ("factors", "delta"):
        from mcl.cli.barrier_cmd import main as barrier

        argv = [str(tasks[0]), str(tasks[1]), "--space", space, "--points", "6", "--limit", "50",
                "--out", str(OUT / f"barrier-{space}"), "--quiet"]
        print(f"\n$ mcl-barrier {' '.join(argv)}", flush=True)
        if barrier(argv) != 0:
            sys.exit("demo step failed: mcl-barrier")
    summary = json.loads((OUT / "barrier-factors" / "barrier.json").read_text())
    print(f"\ndemo finished in {time.time() - t0:.0f} s; outputs in {OUT}/ "
          f"(report/report.md, barrier-*/path.png); tasks swept: {', '.join(summary['tasks'])}")


if __name__ == "__main__":
    main()
