"""`make demo`: the whole story on the tiny model, end to end through the user-facing CLI, with progress bars.

1. the shipped tiny model (held-out loss) and the base model's scores on the offline 8-task suite;
2. `seq`, `er` and `ilora` over the 8 tasks (a short budget): sequential LoRA forgets, replay keeps
   more, and I-LoRA's slow and fast learners are scored side by side; `mcl report` groups them;
3. the loss barrier on the straight line between the first two `seq` checkpoints (factor and delta
   space) and the loss plane through the first three;
4. a summary of the numbers and where the figures are; the summary is also written to
   results/demo_summary.txt, which the README quotes (a test checks the quote).
Outputs go to out/demo/. MCL_DEMO_STEPS sets the per-task budget (default 40), MCL_DEMO_EXAMPLES the
examples scored per task (default 30).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mcl.cli.main import main as mcl
from mcl.io import write_text_atomic
from mcl.train.records import task_dirs

OUT = Path("out/demo")
SUMMARY = Path("results/demo_summary.txt")
METHODS = {"seq": [], "er": ["method=er", "method_args.buffer_size=200"], "ilora": []}


def _run(argv: list[str]) -> None:
    print(f"\n$ mcl {' '.join(argv)}", flush=True)
    if mcl(argv) != 0:
        sys.exit(f"demo step failed: mcl {' '.join(argv)}")


def _config(method: str) -> str:
    return f"configs/tiny-suite-{'ilora' if method == 'ilora' else 'seq'}.yaml"


def _run_dir(config: str, overrides: list[str]) -> Path:
    from mcl.train import load_config, resolve_run_dir

    return resolve_run_dir(load_config(config, overrides))


def _summary(runs: dict[str, Path]) -> str:
    """Forgetting under seq, ER beside I-LoRA's learners, the barriers: the numbers the demo is about."""
    lines = ["method             OP (final mean score)   BWT (forgetting < 0)"]
    for method, run_dir in runs.items():
        s = json.loads((run_dir / "metrics" / "summary.json").read_text())
        for view in s["views"]:
            key = "score" if view == s["primary_view"] else f"score_{view}"
            label = method if len(s["views"]) == 1 else f"{method} ({view} learner)"
            lines.append(f"{label:<19}{s[key]['OP']:>10.3f}{s[key]['BWT']:>24.3f}")
    for space in ("factors", "delta"):
        b = json.loads((OUT / f"barrier-{space}" / "barrier.json").read_text())
        heights = ", ".join(f"{t} {r['barrier']['loss']['max_minus_linear']:.3f}" for t, r in b["tasks"].items())
        lines.append(f"loss barrier, seq task 0 → 1, {space} space: {heights}")
    return "\n".join(lines)


def main() -> None:
    """Run the demo steps; each prints what it measured, and the end prints the summary."""
    t0 = time.time()
    steps = os.environ.get("MCL_DEMO_STEPS", "40")
    examples = os.environ.get("MCL_DEMO_EXAMPLES", "30")
    OUT.mkdir(parents=True, exist_ok=True)
    print("== 1. the tiny model (shipped weights, pretrained offline on Python stdlib text) and its suite scores")
    _run(["models", "info", "tiny", "--heldout"])
    _run(["eval", "--model", "tiny", "--tasks", "mcl-suite", "--limit", examples, "--out", str(OUT / "base_scores.json")])
    print(f"\n== 2. continual LoRA over 8 tasks: seq, er, ilora ({steps} steps per task)")
    common = [f"train.steps_per_task={steps}", f"eval.max_examples={examples}"]
    runs = {}
    for method, extra in METHODS.items():
        _run(["train", _config(method), *common, *extra])
        runs[method] = _run_dir(_config(method), [*common, *extra])
    _run(["report", *map(str, runs.values()), "--out", str(OUT / "report")])
    print("\n== 3. mode connectivity between consecutive seq checkpoints")
    tasks = task_dirs(runs["seq"])
    for space in ("factors", "delta"):
        _run(["barrier", str(tasks[0]), str(tasks[1]), "--space", space, "--limit", examples,
              "--out", str(OUT / f"barrier-{space}")])
    _run(["plane", *map(str, tasks[:3]), "--grid", "5", "--limit", examples, "--draw", "linear",
          "--out", str(OUT / "plane")])
    summary = f"{_summary(runs)}\n({steps} steps per task, {examples} examples per task scored)\n"
    write_text_atomic(SUMMARY, summary)
    print(f"\n== 4. summary ({time.time() - t0:.0f} s; also in {SUMMARY})\n{summary}", end="")
    print(f"\nfigures: {OUT}/report/report.html (R heatmaps, opens offline), {OUT}/barrier-*/path.png, "
          f"{OUT}/plane/plane.png; per-step logs and generations in each run dir (metrics/train_log.csv, predictions/)")


if __name__ == "__main__":
    main()
