"""Sweep speed on the tiny model: cost per sweep point against the plain merged-weights floor, and in-place apply.

Run: `python benchmarks/sweep_speed.py [--examples 64] [--threads 1]`. Uses the shipped tiny model when its
weights are present, else a random model of the same architecture (timings do not depend on the weights).
The floor is one task's loss on the plain base model (a forward through merged weights, no LoRA layers):
what a sweep point cannot beat. Prints one row per interpolation space (factors and delta with their
default merged forwards, and with `merged=False`, PEFT's unmerged LoRA layers): building a point, applying
it in place, rebuilding a PeftModel instead (ratio), one task's loss on the bound model, a whole 11-point
sweep per point, that ÷ the floor (goal for factors and delta: ≤ 1.05), and the share of the sweep that is
not loss evaluation (point building, apply, binding, hashing).
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model

from mcl.adapters import LoraSpec, read_adapter
from mcl.analysis import sweep
from mcl.data.task import Example, Task, TaskSpec
from mcl.eval import TaskEvaluator
from mcl.paths import Linear
from mcl.paths.merged_forward import bind_for_forward


def timed(fn, repeat: int) -> float:
    """Fastest wall time of fn() in milliseconds (the least disturbed run on a shared machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def tiny_model():
    """(model, tokenizer, description): the shipped tiny model, or a random one of its architecture."""
    from mcl.models.tiny import ASSET_DIR, TinySpec, model_config, train_tokenizer

    if (ASSET_DIR / "model.safetensors").is_file():
        from mcl.models import load_base

        model, tok = load_base("tiny")
        return model, tok, "tiny (shipped weights)"
    from transformers import LlamaForCausalLM

    from mcl.data.sources import read_text, stdlib_files

    tok = train_tokenizer([read_text(f) for f in stdlib_files("pretrain")[:60]], TinySpec().vocab_size)
    torch.manual_seed(0)
    return LlamaForCausalLM(model_config(TinySpec(), tok)).eval(), tok, "tiny architecture, random weights"


def adapters(model, out: Path):
    """Two random all-linear r=8 LoRA adapters saved by plain peft."""
    states = []
    for seed in (1, 2):
        peft = get_peft_model(copy.deepcopy(model), LoraSpec().to_peft())
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        peft.save_pretrained(out / str(seed))
        states.append(read_adapter(out / str(seed)))
    return states


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64, help="eval examples per task (default 64)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, what = tiny_model()
    rng = random.Random(0)
    words = "alpha beta gamma delta def return class import value index count".split()
    examples = [Example(" ".join(rng.choice(words) for _ in range(40)), " ".join(rng.choice(words) for _ in range(4)))
                for _ in range(args.examples)]
    task = TaskEvaluator(tok, Task(TaskSpec("synthetic"), preloaded={"eval": examples}), "eval", batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = adapters(model, Path(tmp))
        rebuild_ms = timed(lambda: PeftModel.from_pretrained(copy.deepcopy(model), a.path).eval(), 5)
        print(f"model: {what}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
              f"LoRA r=8 on all linear layers ({sum(v.numel() for v in a.tensors.values()) / 1e3:.0f}k params); "
              f"{args.examples} eval examples; {torch.get_num_threads()} thread(s)")
        print(f"rebuilding a PeftModel per point (deepcopy base + from_pretrained): {rebuild_ms:.1f} ms")
        floor_ms = timed(lambda: task.loss_evaluator.loss(model), 5)
        print(f"floor: loss on the plain base model (merged weights, no LoRA layers): {floor_ms:.1f} ms")
        print(f"{'space':<17} {'point ms':>9} {'apply ms':>9} {'rebuild/apply':>14} {'loss ms':>9} "
              f"{'sweep ms/pt':>12} {'÷ floor':>8} {'not loss':>9}")
        for space, merged in (("factors", True), ("delta", True), ("merged", True), ("factors", False),
                              ("delta", False)):
            path = Linear(a, b, space=space)
            point_ms = timed(lambda: path.point(0.37), 50)
            with bind_for_forward(path, model, merged) as live:
                p = path.point(0.37)
                apply_ms = timed(lambda: live.apply(p), 200)
                loss_ms = timed(lambda: task.loss_evaluator.loss(live.model), 5)
            sweep_ms = timed(lambda: sweep(path, model, [task], points=11, cache=False, progress=False,
                                           merged=merged), 3) / 11
            name = space if merged or space == "merged" else f"{space} (unmerged)"
            print(f"{name:<17} {point_ms:>9.3f} {apply_ms:>9.3f} {rebuild_ms / apply_ms:>13.0f}x {loss_ms:>9.1f} "
                  f"{sweep_ms:>12.1f} {sweep_ms / floor_ms:>8.3f} {1 - loss_ms / sweep_ms:>9.1%}")

if __name__ == "__main__":
    main()
