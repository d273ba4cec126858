"""Every GPU check of the project in one run, all figures into one JSON file (driven by gpu_check.sh).

Checks, in order (each records its figures and its wall time and runs under its own time limit, `LIMITS`;
one failing or overrunning check is recorded, the others still run; the exit status is 1 when any failed):
1. `env`: torch / transformers / peft versions and the device.
2. `train_step`: benchmarks/train_step.py on a SmolLM2-135M-shaped model (the prepared `smollm2` when
   present, else the same shape with random weights), bf16 weights: ms/step, tokens/s, peak CUDA
   memory for bare, seq, ER and I-LoRA; the ratios; the memory formula (mcl.train.memory) beside them.
3. `learning`: a short tiny-model run (stance → fomc → meeting, seq and I-LoRA): OP, BWT, seconds
   (smoke: the first two tasks); asserts that I-LoRA's saved slow learner moved in task 2.
4. `barrier`: `mcl-barrier` between the seq run's first two adapters on the device, bf16 and fp32.
5. `eval`: `mcl eval` of the last adapter on the device.
6. `scale`: a Llama-2-7B-shaped random model (bf16, gradient checkpointing, LoRA r=8 on q,v) at the
   40 GB config's micro-batch (8 × 1536): a few seq, ER and I-LoRA steps each (benchmarks/memory_check.py's
   step): ms/step, peak CUDA memory against the formula, and an assertion that the slow learner moved.
7. `scale_analysis`: a 5-point factor-space sweep between that I-LoRA run's fast and slow adapters on the
   same shape (bf16): points per second, examples and label tokens per point.
`--smoke` runs the same code on CPU with toy shapes and few steps (a test in `make test` does this).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
TOY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True)
LIMITS = {"train_step": 130, "learning": 100, "barrier": 40, "eval": 30, "scale": 140, "scale_analysis": 40}  # s, 8 min
SCALE_TARGETS = ["q_proj", "v_proj"]  # as configs/llama2-7b-trace-*.yaml


class CheckTimeout(Exception):
    """A check ran past its limit in LIMITS."""


def run_limited(fn: Callable[[], dict], seconds: int) -> dict:
    """fn() under a wall-clock limit (SIGALRM: the main thread is interrupted at its next Python instruction)."""
    def expire(signum, frame):
        raise CheckTimeout(f"ran past its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def shaped_model(out: Path, shape: dict[str, Any]) -> str:
    """A random-weight LLaMA of `shape` saved with the tiny model's tokenizer (ids stay < vocab); its dir."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mcl.models import prepare

    tok = AutoTokenizer.from_pretrained(prepare("tiny"))
    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def check_train_step(a, work: Path) -> dict:
    """Train-step benchmark on the SmolLM2 shape (or toy shape) plus the memory formula's prediction."""
    import train_step

    from mcl.models import model_dir

    real = (model_dir("smollm2") / "config.json").is_file() and not a.smoke
    model = "smollm2" if real else shaped_model(work / "shaped", TOY_SHAPE if a.smoke else SMOLLM2_SHAPE)
    steps, batch, max_len = (3, 4, 64) if a.smoke else (30, 16, 256)
    argv = ["--model", model, "--steps", str(steps), "--batch", str(batch), "--max-len", str(max_len),
            "--device", a.device, "--dtype", a.dtype, "--repeats", "1", "--tasks", "topic,fomc"]
    result = train_step.main(argv)
    result["model"] = "smollm2 (real weights)" if real else "SmolLM2-135M shape, random weights" if not a.smoke else "toy"
    from mcl.train.memory import estimate_for

    result["memory_formula_gib"] = {m: estimate_for(model, m, batch, max_len, a.dtype).total_gib
                                    for m in ("seq", "er", "ilora")}
    return result


def _summary(run: Path) -> dict:
    return json.loads((run / "metrics" / "summary.json").read_text())


def check_learning(a, work: Path) -> dict:
    """A short continual run of the tiny model, seq and I-LoRA (λ 0.9): OP, BWT and seconds per run."""
    from mcl.train.config import load_config
    from mcl.train.loop import train

    steps, batch = (2, 4) if a.smoke else (100, 16)
    out = {}
    a.tasks = ["stance", "fomc"] if a.smoke else ["stance", "fomc", "meeting"]
    for method in ("seq", "ilora"):
        args = {"ema_lambda": 0.9, "buffer_size": 200} if method == "ilora" else {}
        cfg = load_config(None, model="tiny", tasks=a.tasks, method=method, method_args=args,
                          runs_dir=str(work / "runs"), **{"train.steps_per_task": steps, "train.batch_size": batch,
                                                           "train.mixed_precision": a.mixed_precision,
                                                           "eval.max_examples": 8 if a.smoke else 200,
                                                           "eval.generate": not a.smoke})
        t0 = time.perf_counter()
        run = train(cfg, progress_bar=False)
        s = _summary(run)
        out[method] = {"seconds": time.perf_counter() - t0, "run": str(run),
                       **{k: {m: s[k][m] for m in ("OP", "BWT")} for k in ("score", "loss") if k in s}}
    from safetensors.torch import load_file

    first, second = sorted((Path(out["ilora"]["run"]) / "tasks").iterdir())[:2]
    before, after = (load_file(d / "slow" / "adapter_model.safetensors") for d in (first, second))
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    out["ilora"]["slow_moved_in_task_2"] = moved
    if not moved > 0:
        raise AssertionError("I-LoRA's saved slow learner is identical after tasks 1 and 2: it did not move in task 2")
    return out


def _scale_setup(a) -> tuple[dict[str, Any], int, int, int]:
    """(shape, micro-batch, length, steps): Llama-2-7B at the 40 GB config's micro-batch, or toy sizes for --smoke."""
    import memory_check

    return (TOY_SHAPE, 2, 64, 2) if a.smoke else (memory_check.LLAMA2_7B, 8, 1536, 3)


def _free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_scale(a, work: Path) -> dict:
    """seq, ER and I-LoRA steps on the 7B shape with checkpointing: ms/step, peak memory vs the formula."""
    import memory_check

    from mcl.train.memory import GIB

    shape, batch, seq_len, steps = _scale_setup(a)
    out: dict[str, Any] = {"shape": "toy" if a.smoke else "Llama-2-7B", "batch": batch, "seq_len": seq_len,
                           "steps": steps, "dtype": a.dtype, "checkpointing": True, "lora": SCALE_TARGETS}
    for method in ("seq", "er", "ilora"):
        args = (method, batch, seq_len, a.dtype, a.mixed_precision, True, 0.25, SCALE_TARGETS)
        r = memory_check.measure(shape, *args, device=a.device, steps=steps,
                                 save_to=str(work / "scale-ilora") if method == "ilora" else None)
        formula = memory_check.formula_bytes(shape, *args)
        out[method] = {"ms_per_step": r["ms_per_step"], "peak_gib": r["peak_bytes"] / GIB,
                       "formula_gib": formula / GIB, "formula_over_measured": formula / r["peak_bytes"]}
        if method == "ilora":
            out[method]["slow_moved"] = r["slow_moved"]
        _free_device()
    if not out["ilora"]["slow_moved"]:
        raise AssertionError(f"I-LoRA's slow learner did not move over {steps} steps of task 2 at the 7B shape")
    return out


def check_scale_analysis(a, work: Path) -> dict:
    """Points per second of a factor-space sweep between the scale check's fast and slow adapters, same shape."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    import memory_check
    from mcl.adapters import read_adapter
    from mcl.analysis.sweep import evaluators, sweep
    from mcl.models import prepare
    from mcl.paths import Linear

    shape, _, _, _ = _scale_setup(a)
    fast, slow = (read_adapter(work / "scale-ilora" / name) for name in ("fast", "slow"))
    with torch.device(a.device):
        base = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=memory_check.DTYPES[a.dtype])
    base.eval()
    tok = AutoTokenizer.from_pretrained(prepare("tiny"))  # ids < 4096 fit every shape's vocabulary
    tasks = evaluators(tok, ["topic"], limit=8 if a.smoke else 64, batch_size=16, max_len=256)
    path = Linear(fast, slow)
    sweep(path, base, tasks, points=[0.0], cache=False, progress=False)  # warm-up: binding, kernels
    _sync(a.device)
    t0 = time.perf_counter()
    frame = sweep(path, base, tasks, points=5, cache=False, progress=False)
    _sync(a.device)
    seconds = time.perf_counter() - t0
    out = {"points": 5, "seconds": seconds, "points_per_s": 5 / seconds, "examples": len(tasks[0].examples),
           "label_tokens": tasks[0].loss_evaluator.n_tokens, "loss": frame["loss"].tolist()}
    del base
    _free_device()
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _cli(main: Callable[[list[str]], int], argv: list[str]) -> None:
    rc = main(argv)
    if rc:
        raise RuntimeError(f"exit {rc}: {' '.join(argv)}")


def check_barrier(a, work: Path, learning: dict) -> dict:
    """mcl-barrier between the seq run's first two task adapters on the device, in bf16 and fp32."""
    from mcl.cli.barrier_cmd import main as barrier

    tasks = sorted((Path(learning["seq"]["run"]) / "tasks").iterdir())
    out = {}
    for dtype in ("bf16", "fp32"):
        dest = work / f"barrier-{dtype}"
        t0 = time.perf_counter()
        _cli(barrier, [str(tasks[0]), str(tasks[1]), "--points", "3" if a.smoke else "11", "--limit",
                       "8" if a.smoke else "200", "--device", a.device, "--dtype", dtype, "--no-cache", "--quiet",
                       "--out", str(dest)])
        r = json.loads((dest / "barrier.json").read_text())
        out[dtype] = {"seconds": time.perf_counter() - t0,
                      "loss": {t: v["loss"] for t, v in r["tasks"].items()},
                      "barrier": {t: v["barrier"]["loss"]["max_minus_linear"] for t, v in r["tasks"].items()}}
    return out


def check_eval(a, work: Path, learning: dict) -> dict:
    """mcl eval of the seq run's last adapter on the device (loss and, off smoke, the metric)."""
    from mcl.cli.main import main as mcl

    last = sorted((Path(learning["seq"]["run"]) / "tasks").iterdir())[-1]
    dest = work / "eval.json"
    t0 = time.perf_counter()
    argv = ["eval", "--model", "tiny", "--adapter", str(last), "--tasks", *a.tasks, "--device",
            a.device, "--dtype", a.dtype, "--limit", "8" if a.smoke else "200", "--out", str(dest)]
    _cli(mcl, argv + (["--no-generate"] if a.smoke else []))
    return {"seconds": time.perf_counter() - t0, "results": json.loads(dest.read_text())["results"]}


def main(argv: list[str] | None = None) -> int:
    """Run every check; write `<out>/gpu_check.json`; exit 1 when a check failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/gpu_check", help="dir for gpu_check.json (default out/gpu_check)")
    p.add_argument("--smoke", action="store_true", help="CPU, toy shapes, a few steps (< 2 min)")
    a = p.parse_args(argv)
    a.device = "cpu" if a.smoke else "cuda"
    a.dtype = "fp32" if a.smoke else "bf16"
    a.mixed_precision = "no" if a.smoke else "bf16"
    if a.smoke:
        os.environ["ACCELERATE_USE_CPU"] = "1"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (use --smoke for the CPU dry run)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers

    report: dict[str, Any] = {"mode": "smoke (CPU, toy shapes)" if a.smoke else "gpu", "checks": {}, "failed": []}
    report["checks"]["env"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                               "peft": peft.__version__, "python": platform.python_version(),
                               "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], dict]]] = [
            ("train_step", lambda: check_train_step(a, work)),
            ("learning", lambda: check_learning(a, work)),
            ("barrier", lambda: check_barrier(a, work, report["checks"]["learning"])),
            ("eval", lambda: check_eval(a, work, report["checks"]["learning"])),
            ("scale", lambda: check_scale(a, work)),
            ("scale_analysis", lambda: check_scale_analysis(a, work)),
        ]
        for name, fn in steps:
            t0 = time.perf_counter()
            try:
                report["checks"][name] = run_limited(fn, LIMITS[name] * (4 if a.smoke else 1))
            except Exception as e:  # record and go on: one broken check must not hide the others' figures
                report["checks"][name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
                report["failed"].append(name)
            report["checks"][name]["wall_s"] = round(time.perf_counter() - t0, 2)
            _free_device()
            print(f"gpu_check: {name} {'FAILED' if name in report['failed'] else 'ok'} "
                  f"({report['checks'][name]['wall_s']} s)", flush=True)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"gpu_check: wrote {out / 'gpu_check.json'}; failed: {report['failed'] or 'none'}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
