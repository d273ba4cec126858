"""I-LoRA vs ER: training step time and peak memory, measured side by side in one run.

Each method trains the same two suite tasks with the same budget, buffer and seed in its own
subprocess (so peak RSS is per method). Step time is taken on the second task, where replay (and,
for I-LoRA, the slow forward and the consistency loss) is active. On a GPU it also reports the peak
CUDA memory each method allocated (torch.cuda.max_memory_allocated, whole run). Usage:
    python benchmarks/ilora_step.py [--model tiny] [--steps 60] [--tasks topic,fomc] [--repeats 2]
        [--device cpu|cuda] [--dtype fp32|bf16] [--mixed-precision no|bf16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
import torch
from mcl.train.config import load_config
from mcl.train.loop import train
args = json.loads(sys.argv[1])
if args.pop("device") == "cpu":
    os.environ["ACCELERATE_USE_CPU"] = "1"
cfg = load_config(None, **args)
run = train(cfg, progress_bar=False)
phase = json.loads((run / "metrics" / "phase-1.json").read_text())
print(json.dumps({"seconds": phase["train_seconds"], "steps": phase["steps"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}))
"""


def measure(method: str, a: argparse.Namespace, out: str, repeat: int) -> dict:
    """Train `method` in a fresh process; return its second-task timing and peak RSS."""
    cfg = {"model": a.model, "tasks": a.tasks.split(","), "method": method, "runs_dir": f"{out}/{method}-{repeat}",
           "method_args": {"buffer_size": a.buffer}, "train.steps_per_task": a.steps, "train.batch_size": a.batch,
           "train.checkpoint_every": 10_000, "train.seed": repeat, "eval.generate": False, "eval.max_examples": 8,
           "model_dtype": a.dtype, "train.mixed_precision": a.mixed_precision, "train.max_len": a.max_len,
           "device": a.device}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    """Print per-method step time and peak RSS, and the I-LoRA / ER ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--tasks", default="topic,fomc")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--buffer", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="base weights (model_dtype)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    a = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        for repeat in range(a.repeats):  # interleaved, so drift on a shared machine hits both alike
            for method in ("er", "ilora"):
                r = measure(method, a, out, repeat)
                rows.setdefault(method, []).append(r)
    print(f"model={a.model} tasks={a.tasks} steps/task={a.steps} batch={a.batch} buffer={a.buffer} repeats={a.repeats}")
    print(f"device={a.device} dtype={a.dtype} mixed_precision={a.mixed_precision} max_len={a.max_len}")
    print(f"{'method':8s} {'ms/step (task 2)':>18s} {'peak RSS MB':>12s} {'peak CUDA GiB':>14s}")
    summary = {}
    for method, rs in rows.items():
        ms = min(r["seconds"] / r["steps"] * 1000 for r in rs)
        rss = max(r["peak_rss_mb"] for r in rs)
        cuda = max(r["peak_cuda_gib"] for r in rs) if rs[0]["peak_cuda_gib"] is not None else None
        summary[method] = (ms, rss, cuda)
        print(f"{method:8s} {ms:18.1f} {rss:12.0f} {'-' if cuda is None else f'{cuda:.2f}':>14s}")
    (er_ms, er_rss, er_cuda), (il_ms, il_rss, il_cuda) = summary["er"], summary["ilora"]
    cuda = "" if er_cuda is None else f"  peak CUDA memory {il_cuda / er_cuda:.3f}"
    print(f"ratio ilora/er: step time {il_ms / er_ms:.3f}  peak RSS {il_rss / er_rss:.3f}{cuda}")


if __name__ == "__main__":
    main()
