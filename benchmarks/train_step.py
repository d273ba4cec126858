"""mcl's training step (seq, ER, I-LoRA) against the bare transformers + peft loop a user would write.

One process, one base model (fresh copy per method), the same LoRA config, batches, AdamW and gradient
clipping everywhere. The bare loop is the lean one a competent user writes: transformers' `logits_to_keep`
(the LM head only at positions that predict a label, as mcl does) and the mean cross-entropy over the
label tokens (HF's loss), backward, clip, step — on exactly the batches mcl's loop builds for the
second task (`make_batch`, so data loading costs the same in both). mcl's time is its loop's own clock
for the second task (`train_seconds` of phase 1, where ER/I-LoRA replay and I-LoRA's slow forward,
consistency loss and slow update are active). Methods run interleaved, `--repeats` times; the fastest
repeat of each counts (least disturbed on a shared machine). tokens/s counts the current batch's
non-padding tokens (replay tokens are extra work, not throughput). On CPU the process CPU time is
reported beside wall time: on a machine shared with other jobs it is the steadier figure, and with
`--threads 1` (the default on CPU) the ratios are taken on it; on a GPU, on wall time.

    python benchmarks/train_step.py [--model tiny] [--steps 30] [--batch 16] [--device cpu|cuda] [--dtype bf16]
         [--mixed-precision bf16] [--json OUT.json]

Prints ms/step, tokens/s and peak CUDA memory (on a GPU) per method, then the two ratios the issue sets
targets for: ilora/er step time (target <= 1.15x, issue 24) and mcl seq / lean bare tokens/s (target >= 1.0x,
issue 24).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from typing import Callable

import torch


def bare_loop(cfg, device: torch.device, make: Callable[[int], dict], steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the user's lean loop over batches make(0..steps-1) (LM head at label positions via
    `logits_to_keep`, mean answer-token cross-entropy, AdamW, clipping)."""
    from mcl.adapters import add_lora
    from mcl.models import load_base

    base, _ = load_base(cfg.model, dtype=cfg.model_dtype, device=str(device))
    model = add_lora(base, cfg.lora, seed=cfg.train.seed)  # the same PEFT LoraConfig mcl uses
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    amp = cfg.train.mixed_precision != "no"
    amp_dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float16
    _sync(device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        b = make(step)
        targets = b["labels"][:, 1:]
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # positions whose logits predict a label (on the CPU)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                           logits_to_keep=keep.to(device)).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(),
                                                     targets[:, keep].flatten().to(device), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - cpu0


def mcl_run(cfg) -> tuple[float, float]:
    """(wall, CPU) seconds mcl's loop spent on the second task (its own clocks, scoring excluded)."""
    from mcl.train.loop import train

    run = train(cfg, progress_bar=False)
    phase = json.loads((run / "metrics" / "phase-1.json").read_text())
    return phase["train_seconds"], phase["train_cpu_seconds"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def main(argv: list[str] | None = None) -> dict:
    """Run every method interleaved, print the table and the ratios; return them (and write JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="named model, HF dir or hub id (default tiny)")
    p.add_argument("--tasks", default="topic,fomc", help="two tasks; the second is timed")
    p.add_argument("--steps", type=int, default=30, help="steps per task (default 30)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--buffer", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default="bare,seq,er,ilora")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="base weights (model_dtype)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"], help="autocast in both loops")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (default on CPU: 1)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    import os

    from mcl.models.device import resolve_device
    from mcl.train.config import load_config
    from mcl.train.data import encode_tasks, make_batch
    from mcl.data import load_tasks
    from mcl.models import load_tokenizer

    device = resolve_device(a.device)
    if a.threads or device.type == "cpu":
        torch.set_num_threads(a.threads or 1)
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # mcl's loop on the same device as the bare one
    tasks = a.tasks.split(",")
    methods = a.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as out:
        def config(method: str, repeat: int):
            args = {"buffer_size": a.buffer} if method in ("er", "ilora") else {}
            return load_config(None, model=a.model, tasks=tasks, method=method, method_args=args, model_dtype=a.dtype,
                               runs_dir=f"{out}/{method}-{repeat}", **{
                                   "train.steps_per_task": a.steps, "train.batch_size": a.batch,
                                   "train.max_len": a.max_len, "train.checkpoint_every": 10_000,
                                   "train.mixed_precision": a.mixed_precision,
                                   "train.gradient_checkpointing": a.gradient_checkpointing,
                                   "eval.generate": False, "eval.max_examples": 4})

        cfg = config("seq", 0)
        tok = load_tokenizer(cfg.model)
        data = encode_tasks(load_tasks(tasks), tok, a.max_len)
        def make(step: int) -> dict:  # the second task's batches, exactly as mcl's loop builds them
            return make_batch(data, [1], cfg.train, 1, step, tok.pad_token_id)

        tokens = int(sum(make(s)["attention_mask"].sum() for s in range(a.steps)))
        for repeat in range(a.repeats):  # interleaved, so drift on a shared machine hits every method alike
            for method in methods:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                wall, cpu = bare_loop(cfg, device, make, a.steps) if method == "bare" else mcl_run(config(method, repeat))
                results[method].append({"seconds": wall, "cpu_seconds": cpu, "peak_gib": _peak(device)})
    clock = "cpu_seconds" if device.type == "cpu" else "seconds"
    rows = {}
    for method, rs in results.items():
        best = min(r[clock] for r in rs)
        peaks = [r["peak_gib"] for r in rs if r["peak_gib"] is not None]
        rows[method] = {"ms_per_step": best / a.steps * 1e3, "tokens_per_s": tokens / best,
                        "wall_ms_per_step": min(r["seconds"] for r in rs) / a.steps * 1e3,
                        "peak_cuda_gib": max(peaks) if peaks else None, "runs": rs}
    setup = (f"model={a.model} device={device} dtype={a.dtype} mixed_precision={a.mixed_precision} "
             f"grad_ckpt={a.gradient_checkpointing} tasks={a.tasks} (2nd timed) steps={a.steps} batch={a.batch} "
             f"max_len={a.max_len} buffer={a.buffer} repeats={a.repeats} threads={torch.get_num_threads()} "
             f"torch={torch.__version__} host={platform.node()}")
    print(setup)
    print(f"ms/step and tokens/s on {'process CPU time' if clock == 'cpu_seconds' else 'wall time'}, "
          f"fastest of {a.repeats}; wall ms/step beside it")
    print(f"{'method':8s} {'ms/step':>9s} {'tokens/s':>10s} {'wall ms/step':>13s} {'peak CUDA GiB':>14s}")
    for method, r in rows.items():
        peak = "-" if r["peak_cuda_gib"] is None else f"{r['peak_cuda_gib']:.2f}"
        print(f"{method:8s} {r['ms_per_step']:9.1f} {r['tokens_per_s']:10.0f} {r['wall_ms_per_step']:13.1f} {peak:>14s}")
    ratios = {}
    if "er" in rows and "ilora" in rows:
        ratios["ilora_over_er_step_time"] = rows["ilora"]["ms_per_step"] / rows["er"]["ms_per_step"]
        print(f"ilora / er step time:         {ratios['ilora_over_er_step_time']:.3f}x   (target <= 1.15x, issue 24)")
    if "seq" in rows and "bare" in rows:
        ratios["seq_over_bare_tokens_per_s"] = rows["seq"]["tokens_per_s"] / rows["bare"]["tokens_per_s"]
        print(f"mcl seq / lean bare loop tokens/s: {ratios['seq_over_bare_tokens_per_s']:.3f}x   (target >= 1.0x)")
    result = {"setup": setup, "methods": rows, "ratios": ratios}
    if a.json:
        from mcl.io import write_json_atomic

        write_json_atomic(a.json, result)
    return result


if __name__ == "__main__":
    main()
