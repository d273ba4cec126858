"""Time to a loss barrier within 2% of the 101-point value: a hand-written transformers + peft loop vs mcl.

Run: `python benchmarks/barrier_vs_handwritten.py RUN_DIR [--examples 50] [--threads 1]` (RUN_DIR: a SeqFT
run on the shipped tiny model, see benchmarks/adaptive_barrier.py). Cases: the first two task adapters
(scored on the first task) and the first adapter with its sign-flipped twin (−A, −B), both linear in
factor space. The hand-written loop is what a user would write: one PeftModel, per point
`set_peft_model_state_dict` with the interpolated factors, batches padded by the tokenizer, HF's
full-vocabulary logits and a summed cross-entropy, on a 101-point grid. mcl runs `--points auto`
(coarse grid + bounded search) with merged forwards, the LM head at label positions only, no cache.
Prints seconds, evaluated points, each barrier and the ratio hand ÷ mcl, from one run.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel, set_peft_model_state_dict

from mcl.adapters import AdapterState, read_adapter
from mcl.analysis import AdaptiveSearch, barriers, evaluators, path_barriers, sweep
from mcl.models import load_base
from mcl.paths import Linear
from mcl.paths.lora_math import lora_terms


def sign_flipped(state: AdapterState) -> AdapterState:
    """(−A, −B): the same ΔW, the opposite factors."""
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        tensors[term.a_key], tensors[term.b_key] = -state.tensors[term.a_key], -state.tensors[term.b_key]
    return AdapterState(dict(state.config), tensors, meta=dict(state.meta))


def hand_written(base, adapter_dir: str, a: AdapterState, b: AdapterState, tok, examples, batch_size: int) -> list[float]:
    """Token-pooled answer loss at 101 t values, the way a transformers + peft user writes it."""
    model = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).eval()
    encoded = []
    for e in examples:
        prompt = tok(e.prompt, add_special_tokens=False)["input_ids"]
        answer = tok(e.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prefix = [tok.bos_token_id] if tok.bos_token_id is not None else []
        encoded.append((prefix + prompt + answer, [-100] * (len(prefix) + len(prompt)) + answer))
    losses = []
    for t in np.linspace(0, 1, 101):
        set_peft_model_state_dict(model, {k: (1 - t) * a.tensors[k] + t * b.tensors[k] for k in a.tensors})
        total, count = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(encoded), batch_size):
                chunk = encoded[s:s + batch_size]
                batch = tok.pad({"input_ids": [ids for ids, _ in chunk]}, return_tensors="pt")
                width = batch["input_ids"].shape[1]
                labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
                logits = model(**batch).logits
                total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                               ignore_index=-100, reduction="sum"))
                count += int((labels[:, 1:] != -100).sum())
        losses.append(total / count)
    return losses


def main() -> None:
    """Run both cases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a SeqFT run directory on the tiny model")
    ap.add_argument("--examples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dirs = sorted((args.run / "tasks").iterdir(), key=lambda d: int(d.name.split("-")[0]))[:2]
    a, b = (read_adapter(d) for d in dirs)
    base, tok = load_base(a.base_model)
    task = evaluators(tok, [a.meta["task"]], "eval", 32, 256, args.examples)[0]
    print(f"tiny model, task {a.meta['task']} ({args.examples} eval examples), {torch.get_num_threads()} thread(s)")
    print(f"{'case':<22} {'hand s':>7} {'hand pts':>8} {'hand barrier':>12} {'mcl s':>7} {'mcl pts':>7} "
          f"{'mcl barrier':>11} {'rel err':>8} {'hand/mcl':>9} {'|Δloss| t=0,1':>14}")
    for name, (x, y) in {f"{dirs[0].name}→{dirs[1].name}": (a, b), f"{dirs[0].name} sign twin": (a, sign_flipped(a))}.items():
        t0 = time.perf_counter()
        hand = hand_written(base, str(dirs[0]), x, y, tok, task.examples, 32)
        t1 = time.perf_counter()
        frame = sweep(Linear(x, y, space="factors"), base, [task], AdaptiveSearch(), cache=False, progress=False,
                      merged=True)
        t2 = time.perf_counter()
        ref = barriers(np.linspace(0, 1, 101), hand)["max_minus_linear"]
        got = path_barriers(frame)[task.task.name]["barrier"]["loss"]["max_minus_linear"]
        rel = abs(got - ref) / ref if ref > 0 else abs(got - ref)
        ends = frame.sort_values("t")["loss"].to_numpy()[[0, -1]]
        agree = max(abs(ends[0] - hand[0]), abs(ends[1] - hand[-1]))
        print(f"{name:<22} {t1 - t0:>7.1f} {101:>8d} {ref:>12.4f} {t2 - t1:>7.1f} {len(frame):>7d} {got:>11.4f} "
              f"{rel:>8.2%} {(t1 - t0) / (t2 - t1):>8.2f}x {agree:>14.1e}")


if __name__ == "__main__":
    main()
