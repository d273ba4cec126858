"""End to end, as processes: `mcl-barrier --points auto` vs hand-written transformers + peft loops of 21 and 101 points.

Run: `python benchmarks/barrier_vs_handwritten.py RUN_DIR [--examples 50] [--threads 1] [--repeats 3]` where
RUN_DIR is a SeqFT run on the shipped tiny model (see benchmarks/adaptive_barrier.py). The pair is the one
benchmarks/barrier_pair.py builds from it: a real factor-space loss barrier with its peak off t = 0.5. One
case per task of the pair. Every variant is its own process, start-up included, timed from outside in
rotating order (`--repeats` rounds; medians reported):
- `hand 21` / `hand 101`: what a user writes (this file, `--hand N`): torch + transformers + peft only, one
  PeftModel, per point `set_peft_model_state_dict` with the interpolated factors, batches padded by the
  tokenizer, HF's full-vocabulary logits and a summed cross-entropy over the answer tokens;
- `mcl`: `mcl-barrier A B --points auto --tasks TASK --limit N --no-cache --out DIR` (defaults otherwise:
  merged forwards, LM head at label positions only; it also writes its CSV, PNG and HTML).
Accuracy is against the 101-point loop's barrier (max above the chord). Prints one row per (case, variant):
median seconds, points evaluated, barrier, error vs the 101-point reference, and the speed-up of mcl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HAND_POINTS = (21, 101)


def hand_loop(points: int, base: str, a_dir: str, b_dir: str, examples: str, batch_size: int) -> list[float]:
    """Token-pooled answer loss at `points` evenly spaced t, the way a transformers + peft user writes it."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), a_dir).eval()
    a, b = (load_file(f"{d}/adapter_model.safetensors") for d in (a_dir, b_dir))
    encoded = []
    for e in json.loads(Path(examples).read_text()):
        prompt = tok(e["prompt"], add_special_tokens=False)["input_ids"]
        answer = tok(e["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prefix = [tok.bos_token_id] if tok.bos_token_id is not None else []
        encoded.append((prefix + prompt + answer, [-100] * (len(prefix) + len(prompt)) + answer))
    losses = []
    for t in torch.linspace(0, 1, points).tolist():
        set_peft_model_state_dict(model, {k: (1 - t) * a[k] + t * b[k] for k in a})
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


def chord_barrier(t: list[float], v: list[float]) -> float:
    """max over the points of v minus the chord between the endpoints."""
    return max(y - ((1 - x) * v[0] + x * v[-1]) for x, y in zip(t, v))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one process (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    """Build the pair, time every variant per case in rotating order, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="a SeqFT run directory on the tiny model")
    ap.add_argument("--examples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of every variant, in rotating order (default 3)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hand", type=int, metavar="N", help=argparse.SUPPRESS)  # child mode: the hand loop
    ap.add_argument("--child", nargs=5, metavar=("BASE", "A", "B", "EXAMPLES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hand:
        import torch

        torch.set_num_threads(args.threads)
        base, a, b, examples, out = args.child
        Path(out).write_text(json.dumps(hand_loop(args.hand, base, a, b, examples, args.batch_size)))
        return

    from barrier_pair import build_pair

    from mcl.adapters import read_adapter
    from mcl.data.load import load_tasks
    from mcl.models.tiny import ASSET_DIR

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a, b = build_pair(args.run, work / "pair")
        tasks = [read_adapter(d).meta["task"] for d in (a, b)]
        print(f"tiny model, pair {a.name} = {args.run.name} task 0, {b.name} = task 1 as (−A, −B/4); "
              f"{args.examples} eval examples; {args.threads} thread(s); {args.repeats} rounds, medians")
        variants, results = {}, {}
        for task in tasks:
            examples = work / f"{task}.json"
            examples.write_text(json.dumps([{"prompt": e.prompt, "answer": e.answer}
                                            for e in load_tasks([task])[0].split("eval")[:args.examples]]))
            for n in HAND_POINTS:
                out = work / f"hand{n}-{task}.json"
                variants[(task, f"hand {n}")] = ([sys.executable, __file__, "--hand", str(n), "--threads",
                                                  str(args.threads), "--batch-size", str(args.batch_size), "--child",
                                                  str(ASSET_DIR), str(a), str(b), str(examples), str(out)], out)
            out = work / f"mcl-{task}"
            mcl = [sys.executable, "-m", "mcl.cli.barrier_cmd", str(a), str(b), "--points", "auto", "--tasks", task,
                   "--limit", str(args.examples), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                   "--no-cache", "--quiet", "--out", str(out)]
            variants[(task, "mcl")] = (mcl, out / "barrier.json")
        order = list(variants)
        seconds = {k: [] for k in order}
        for r in range(args.repeats):
            for k in order[r % len(order):] + order[:r % len(order)]:
                seconds[k].append(timed(variants[k][0], env))
        for (task, name), (_, out) in variants.items():
            if name == "mcl":
                found = json.loads(out.read_text())["tasks"][task]
                results[(task, name)] = (len(found["t"]), found["barrier"]["loss"]["max_minus_linear"],
                                         found.get("resolved", True))
            else:
                losses = json.loads(out.read_text())
                t = [i / (len(losses) - 1) for i in range(len(losses))]
                results[(task, name)] = (len(losses), chord_barrier(t, losses), True)
    print(f"{'case':<8} {'variant':<9} {'median s':>9} {'points':>6} {'barrier':>9} {'error vs 101':>12} "
          f"{'resolved':>8} {'speed-up of mcl':>15}")
    for task in tasks:
        ref = results[(task, "hand 101")][1]
        mcl_s = statistics.median(seconds[(task, "mcl")])
        for name in ("hand 21", "hand 101", "mcl"):
            s = statistics.median(seconds[(task, name)])
            n, barrier, resolved = results[(task, name)]
            print(f"{task:<8} {name:<9} {s:>9.1f} {n:>6d} {barrier:>9.4f} {(barrier - ref) / ref:>12.2%} "
                  f"{'yes' if resolved else 'NO':>8} {s / mcl_s:>14.2f}x")


if __name__ == "__main__":
    main()
