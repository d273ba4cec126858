"""The memory formula (mcl.train.memory) against the measured peak of one real training step, side by side.

Each case builds a random-weight LLaMA of a given shape (no download), wraps it with the method's adapters
exactly as `mcl train` does (`Method.setup`), fills the replay buffer with an earlier task, creates
AdamW's state, and then measures one step of the loop's body: `method.loss` (under autocast for bf16
mixed precision) → backward → clipping → optimizer step → `after_step`. Every example is `--seq-len`
tokens long (no padding: the formula's padded length) with the last `answer_fraction` of them labelled.

How the peak is measured:
- CPU: torch's profiler with `profile_memory=True` records every allocation and free of the CPU
  allocator during the step (`[memory]` events with signed byte counts). The peak is the bytes live
  before the step (every parameter, buffer and optimizer-state tensor, counted once per storage) plus
  the maximum of the running sum of those events.
- CUDA: `torch.cuda.max_memory_allocated` over the step (reset just before it).
Both count tensor bytes only, as the formula does (no allocator caching, no CUDA context).

    python benchmarks/memory_check.py [--cases tiny,smollm2] [--batch 4] [--seq-len 256] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

TINY = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=4096, tie_word_embeddings=False)  # the shape of mcl's `tiny` model
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False)
CASES = {  # name: (shape, model_dtype, mixed_precision, LoRA targets)
    "tiny": (TINY, "fp32", "no", ["q_proj", "v_proj"]),
    "tiny-all-linear": (TINY, "fp32", "no", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]),
    "tiny-bf16": (TINY, "bf16", "bf16", ["q_proj", "v_proj"]),
    "smollm2": (SMOLLM2, "bf16", "bf16", ["q_proj", "v_proj"]),
    "smollm2-fp32": (SMOLLM2, "fp32", "no", ["q_proj", "v_proj"]),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _live_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors`."""
    storages = {}
    for t in tensors:
        if torch.is_tensor(t) and t.device.type == "cpu":
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def cpu_peak_bytes(step, live_before: int) -> int:
    """Peak CPU tensor bytes while `step()` runs: `live_before` + the running maximum of the allocator's events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return live_before + peak


def measure(shape: dict[str, Any], method: str, batch: int, seq_len: int, model_dtype: str = "fp32",
            mixed_precision: str = "no", checkpointing: bool = False, answer_fraction: float = 0.25,
            targets: list[str] | None = None, device: str = "cpu", steps: int = 1,
            save_to: str | None = None) -> dict[str, Any]:
    """Peak tensor bytes of a training step of `method` (see the module docstring for how), and more.

    With `steps` > 1 the later steps are timed (`ms_per_step`; on CUDA the peak covers every step);
    `slow_moved` says whether I-LoRA's slow learner changed over the steps (None for other methods);
    `save_to` writes the method's adapters there afterwards (PEFT dirs, as a run's task dir).
    """
    import time

    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, LlamaConfig

    from mcl.adapters import LoraSpec, get_state
    from mcl.data.tokenize import Encoded, collate
    from mcl.models import enable_gradient_checkpointing
    from mcl.train.config import load_config
    from mcl.train.losses import mean_ce, to_device
    from mcl.train.methods import METHODS, Context

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=max(2048, seq_len))
    with torch.device(device):  # built where it runs, in its dtype (a 7B shape never exists in fp32)
        base = AutoModelForCausalLM.from_config(config, dtype=DTYPES[model_dtype])
    if checkpointing:
        enable_gradient_checkpointing(base)
    lora = LoraSpec(r=8, alpha=16.0, target_modules=targets or ["q_proj", "v_proj"])
    cfg = load_config(None, method=method, runs_dir="unused")
    accelerator = Accelerator(cpu=device == "cpu")
    ctx = Context(model=None, tokenizer=SimpleNamespace(pad_token_id=0), accelerator=accelerator, config=cfg,
                  tasks=["old", "new"], loss_fn=mean_ce)
    m = METHODS[method](ctx, **({"buffer_size": 4 * batch} if method != "seq" else {}))
    ctx.model = m.setup(base, lora, seed=0).to(device)
    ctx.model.train()
    answer = max(1, round(answer_fraction * seq_len))

    def examples(seed: int) -> list[Encoded]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(batch):
            ids = torch.randint(3, shape["vocab_size"], (seq_len,), generator=g).tolist()
            out.append(Encoded(ids, [-100] * (seq_len - answer) + ids[seq_len - answer:]))
        return out

    if hasattr(m, "buffer"):
        m.buffer.add(examples(1), [0] * batch)
    params = m.trainable()
    opt = torch.optim.AdamW(params, lr=1e-4)
    for p in params:  # AdamW's moments exist before the measured step, as from the second step on
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    current = examples(2)
    amp = torch.autocast(torch.device(device).type, dtype=DTYPES.get(mixed_precision), enabled=mixed_precision != "no")
    slow_before = get_state(ctx.peft, "slow") if "slow" in ctx.peft.peft_config else None

    def step() -> None:
        b = to_device({**collate(current, 0), "examples": current, "task": [1] * batch}, device)
        with amp:
            loss = m.loss(b, [1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        m.after_step(b, [1], 0)

    if device == "cpu":
        live = [*ctx.model.parameters(), *ctx.model.buffers(),
                *(t for s in opt.state.values() for t in s.values())]
        peak = cpu_peak_bytes(step, _live_bytes(live))
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        step()
    if device != "cpu":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    ms = (time.perf_counter() - t0) / (steps - 1) * 1e3 if steps > 1 else None
    moved = None
    if slow_before is not None:
        after = get_state(ctx.peft, "slow")
        moved = any(not torch.equal(after[k], v) for k, v in slow_before.items())
    if save_to is not None:
        m.save_task(Path(save_to), {"task": "new", "phase": 1, "method": method})
    return {"peak_bytes": peak, "ms_per_step": ms, "slow_moved": moved}


def formula_bytes(shape: dict[str, Any], method: str, batch: int, seq_len: int, model_dtype: str, mixed_precision: str,
                  checkpointing: bool, answer_fraction: float, targets: list[str]) -> float:
    """The formula's total for the same step, in bytes (it does not depend on `mixed_precision`)."""
    from mcl.adapters import LoraSpec
    from mcl.train.memory import GIB, Shape, estimate

    lora = LoraSpec(r=8, alpha=16.0, target_modules=targets)
    e = estimate(Shape.from_config(shape), lora, method, batch, seq_len, model_dtype, checkpointing, answer_fraction)
    return e.total * GIB


def compare(case: str, method: str, checkpointing: bool, batch: int, seq_len: int, answer_fraction: float = 0.25,
            device: str = "cpu") -> dict[str, Any]:
    """One row: the formula's and the measured GiB, and formula / measured."""
    from mcl.train.memory import GIB

    shape, dtype, mp, targets = CASES[case]
    args = (method, batch, seq_len, dtype, mp, checkpointing, answer_fraction, targets)
    measured = measure(shape, *args, device=device)["peak_bytes"]
    formula = formula_bytes(shape, *args)
    return {"case": case, "method": method, "checkpointing": checkpointing, "batch": batch, "seq_len": seq_len,
            "formula_gib": formula / GIB, "measured_gib": measured / GIB, "ratio": formula / measured}


def main(argv: list[str] | None = None) -> list[dict]:
    """Print formula vs measured for every case × method × checkpointing; return the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="tiny,smollm2", help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--methods", default="seq,er,ilora")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--answer-fraction", type=float, default=0.25)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(1) if a.device == "cpu" else None
    rows = []
    print(f"batch {a.batch} x {a.seq_len} tokens, answer fraction {a.answer_fraction}, device {a.device}, "
          f"torch {torch.__version__}")
    print(f"{'case':16s} {'method':7s} {'ckpt':5s} {'formula GiB':>12s} {'measured GiB':>13s} {'ratio':>6s}")
    for case in a.cases.split(","):
        for method in a.methods.split(","):
            for ckpt in (False, True):
                r = compare(case, method, ckpt, a.batch, a.seq_len, a.answer_fraction, a.device)
                rows.append(r)
                print(f"{case:16s} {method:7s} {'on' if ckpt else 'off':5s} {r['formula_gib']:12.4f} "
                      f"{r['measured_gib']:13.4f} {r['ratio']:6.3f}", flush=True)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"worst |formula / measured - 1| = {worst:.1%} (target <= 25%)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
