"""Start-up of mcl's light commands: wall time of each as a fresh process (what a user waits for), and whether
it imported torch.

Run: `python benchmarks/startup.py [--repeat 5]`. Builds a two-adapter fixture and a finished run dir in a temp
dir (numpy + safetensors, no torch), then times `mcl list`, `mcl adapters info/check`, `mcl report`,
`mcl data show/check/template`, and `--help` of every command and of `mcl-barrier`, each the fastest of
`--repeat` runs (the least disturbed on a shared machine). The bound is 1 s each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
TOPIC = ROOT / "mcl" / "data" / "assets" / "mcl-suite-v3" / "topic"
PROBE = ("import runpy, sys; sys.argv = {argv!r}; rc = 0\n"
         "try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
         "except SystemExit as e:\n    rc = e.code or 0\n"
         "sys.stdout.flush(); print('TORCH' if 'torch' in sys.modules else 'LIGHT', rc, file=sys.stderr)")


def fixture(root: Path) -> tuple[str, str, str]:
    """Two small PEFT adapter dirs and one finished run dir under `root`."""
    rng = np.random.default_rng(0)
    dirs = []
    for name in ("a", "b"):
        d = root / name
        d.mkdir()
        key = "base_model.model.model.layers.0.self_attn.q_proj"
        save_file({f"{key}.lora_A.weight": rng.standard_normal((8, 128), dtype=np.float32),
                   f"{key}.lora_B.weight": rng.standard_normal((128, 8), dtype=np.float32)},
                  str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                           "target_modules": ["q_proj"], "base_model_name_or_path": "tiny"}))
        dirs.append(str(d))
    run = root / "run"
    (run / "metrics").mkdir(parents=True)
    from mcl.train.config import RunConfig

    (run / "config.yaml").write_text(yaml.safe_dump(RunConfig(tasks=["a", "b"]).to_dict()))
    (run / "metrics" / "R.csv").write_text(",a,b\na,0.5,0.1\nb,0.25,0.75\n")
    (run / "metrics" / "summary.json").write_text(json.dumps({
        "tasks": ["a", "b"], "views": ["main"], "primary_view": "main",
        "score": {"OP": 0.5, "BWT": 0.25, "FWT": 0.0, "forgetting": 0.0}}))
    return dirs[0], dirs[1], str(run)


def commands(a: str, b: str, run: str, out: str) -> list[tuple[str, list[str]]]:
    """(module, argv) of every light command and every --help."""
    from mcl.cli.main import build_parser

    def walk(parser, prefix=()):
        yield prefix
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*prefix, name))

    light = [["list"], ["adapters", "info", a], ["adapters", "check", a, b], ["report", run, "--out", out],
             ["data", "show", str(TOPIC)], ["data", "check", str(TOPIC)], ["data", "template", "FOMC"]]
    helps = [[*p, "--help"] for p in walk(build_parser())]
    return [("mcl.cli.main", ["mcl", *c]) for c in light + helps] + [("mcl.cli.barrier_cmd", ["mcl-barrier", "--help"])]


def time_command(module: str, argv: list[str], repeat: int) -> tuple[float, str]:
    """Fastest wall time (s) of a fresh interpreter running the command, and LIGHT/TORCH."""
    best, kind = float("inf"), "?"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for _ in range(repeat):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, module=module)], env=env,
                              capture_output=True, text=True)
        best = min(best, time.perf_counter() - t)
        kind, rc = done.stderr.split()[-2:]
        if rc != "0":
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-400:]}")
    return best, kind


def main() -> None:
    """Print one row per command: fastest start-to-exit time and whether torch was imported."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the fastest counts (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b, run = fixture(Path(tmp))
        rows = [(" ".join(argv[0:1] + ["…" if x.startswith(tmp) else x.replace(f"{ROOT}/", "") for x in argv[1:]]),
                 *time_command(module, argv, args.repeat)) for module, argv in commands(a, b, run, f"{tmp}/rep")]
    print(f"| command | wall s (fastest of {args.repeat}) | torch imported |\n|---|---|---|")
    for name, seconds, kind in rows:
        print(f"| `{name}` | {seconds:.2f} | {'yes' if kind == 'TORCH' else 'no'} |")
    slow = [name for name, seconds, _ in rows if seconds >= 1.0]
    print(f"{len(rows)} commands; slowest {max(s for _, s, _ in rows):.2f} s; over 1 s: {', '.join(slow) or 'none'}")


if __name__ == "__main__":
    main()
