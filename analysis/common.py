"""Shared helpers of the reproduction scripts: run `mcl train` configurations, a few at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_run(config: str, overrides: list[str], threads: int = 1) -> str:
    """Train (or resume, or reuse) one run via the CLI; return its run dir."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mcl.cli.main", "train", str(ROOT / config), *overrides, "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{' '.join(overrides)}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    run_dir = str(ROOT / next(line[5:] for line in out.stdout.splitlines() if line.startswith("run: ")))  # any cwd
    print(f"done {' '.join(overrides)} -> {run_dir}", flush=True)
    return run_dir


def finished_run(config: str, overrides: list[str]) -> str | None:
    """The run dir of a config + overrides if that run has finished (its summary exists), else None; trains nothing."""
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir

    run_dir = ROOT / resolve_run_dir(load_config(str(ROOT / config), overrides))  # relative to the repo, as train_run runs
    return str(run_dir) if (run_dir / "metrics" / "summary.json").exists() else None


def train_grid(config: str, grid: list[list[str]], jobs: int = 2, threads: int = 1) -> list[str]:
    """Train every override list of `grid` (jobs at a time); run dirs in grid order."""
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda over: train_run(config, over, threads), grid))


def report(run_dirs: list[str], out: str) -> None:
    """`mcl report` over run dirs into `out` (report.md, report.csv, heatmaps)."""
    subprocess.run([sys.executable, "-m", "mcl.cli.main", "report", *run_dirs, "--out", out], check=True, cwd=ROOT)


def run_name(spec: str) -> str:
    """A method variant's kept-run folder name: `ilora:ema_lambda=0.9,x=y` -> `ilora_ema_lambda0.9_xy`."""
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


TUNED_STEPS = 100  # steps per task of the tuning stream (the README's protocol)
PLACEMENT = "ilora:placement=search,consistency_weight=0.1"  # the slow learner placed by the path search


def at_steps(spec: str, steps: int) -> str:
    """A tuned method variant at `steps` per task: an explicit ema_lambda keeps its window's share of a task."""
    name, _, args = spec.partition(":")
    kv = dict(x.split("=", 1) for x in args.split(",") if x)
    if "ema_lambda" in kv and steps != TUNED_STEPS:
        kv["ema_lambda"] = f"{1 - (1 - float(kv['ema_lambda'])) * TUNED_STEPS / steps:.4g}"  # window (1-λ)^-1 ∝ steps
    return name + (":" + ",".join(f"{k}={v}" for k, v in kv.items()) if kv else "")


def control(spec: str) -> str | None:
    """ER with a variant's training-setting changes (its dotted config keys, e.g. a constant schedule), or None."""
    keys = [kv for kv in spec.partition(":")[2].split(",") if "." in kv.partition("=")[0]]
    return "er:" + ",".join(keys) if keys else None


def final_methods(chosen: str, steps: int = TUNED_STEPS, smollm2: bool = False) -> list[str]:
    """The protocol's final grid: seq, ER, the chosen variant, the placement variant (+ released presets, one, mtl on tiny).

    When the chosen variant also changes a training setting, ER with that setting runs beside it as a control."""
    methods = ["seq", "er", *filter(None, [control(chosen)]), at_steps(chosen, steps), PLACEMENT]
    methods += [] if smollm2 else ["ilora-released", "ilora-as-released", "one", "mtl"]
    return list(dict.fromkeys(methods))
