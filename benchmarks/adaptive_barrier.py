"""Adaptive barrier search vs a 101-point grid: evaluations and barrier error per case, on the tiny model.

Run: `python benchmarks/adaptive_barrier.py RUN_DIR [--examples 100] [--threads 1]` where RUN_DIR is a
sequential (SeqFT) run on the shipped tiny model, e.g. made in a few minutes with
`mcl train configs/tiny-suite-seq.yaml "tasks=[stance,fomc,meeting]" train.steps_per_task=100 eval.generate=false`.
Cases: every consecutive pair of the run's task adapters, scored on both pairs' tasks (one case per
(pair, task)), and two planted barriers in factor space: the first adapter and its sign-flipped twin
(−A, −B), which has the same ΔW, and the rescaled twin (−3A, −B/3). Each case prints the 101-point
barrier (max above the chord), the adaptive search's barrier, its evaluations, and the error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mcl.adapters import AdapterState, read_adapter
from mcl.analysis import AdaptiveSearch, evaluators, path_barriers, sweep
from mcl.models import load_base
from mcl.paths import Linear
from mcl.paths.lora_math import lora_terms

TOLERANCE = 0.02


def twin(state: AdapterState, scale: float) -> AdapterState:
    """The gauge twin (−scale·A, −B/scale) of an adapter: the same ΔW per module, other factors."""
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        tensors[term.a_key] = -scale * state.tensors[term.a_key]
        tensors[term.b_key] = -state.tensors[term.b_key] / scale
    return AdapterState(dict(state.config), tensors, meta=dict(state.meta), path=None)


def case_rows(name: str, path: Linear, model, tasks, search: AdaptiveSearch) -> list[dict]:
    """One row per task: 101-grid barrier, adaptive barrier, evaluations, error, seconds of each."""
    t0 = time.perf_counter()
    grid = path_barriers(sweep(path, model, tasks, 101, cache=False, progress=False))
    t1 = time.perf_counter()
    frame = sweep(path, model, tasks, search, cache=False, progress=False)
    t2 = time.perf_counter()
    auto = path_barriers(frame)
    rows = []
    for task, g in grid.items():
        ref, got = g["barrier"]["loss"]["max_minus_linear"], auto[task]["barrier"]["loss"]["max_minus_linear"]
        rows.append({"case": name, "task": task, "grid101": ref, "auto": got, "evals": len(auto[task]["t"]),
                     "argmax_t": auto[task]["barrier"]["loss"]["argmax_t"], "abs_err": abs(got - ref),
                     "rel_err": abs(got - ref) / ref if ref > 0 else (0.0 if got == 0 else float("inf")),
                     "grid_s": t1 - t0, "auto_s": t2 - t1})
    return rows


def main() -> None:
    """Run every case and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a SeqFT run directory (runs/<name>) on the tiny model")
    ap.add_argument("--examples", type=int, default=100, help="eval examples per task (default 100)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dirs = sorted((args.run / "tasks").iterdir(), key=lambda d: int(d.name.split("-")[0]))
    states = [read_adapter(d) for d in dirs]
    model, tok = load_base(states[0].base_model)
    names = [s.meta["task"] for s in states]
    evals = {n: e for n, e in zip(names, evaluators(tok, names, "eval", 50, 256, args.examples))}
    search = AdaptiveSearch()
    print(f"tiny model, {args.examples} eval examples per task, {torch.get_num_threads()} thread(s); "
          f"adaptive: coarse {search.coarse}, at most {search.max_points} points, xtol {search.xtol}")
    print(f"{'case':<34} {'task':<8} {'grid101':>8} {'auto':>8} {'evals':>5} {'t*':>6} {'abs err':>8} {'rel err':>8} "
          f"{'ok':>3} {'grid s':>7} {'auto s':>7}", flush=True)
    cases = [(f"{dirs[0].name} twin x{scale:g} factors", Linear(states[0], twin(states[0], scale)), [names[0]])
             for scale in (1.0, 3.0)]
    for (da, a), (db, b) in zip(zip(dirs, states), zip(dirs[1:], states[1:])):
        cases += [(f"{da.name}→{db.name} {space}", Linear(a, b, space=space), [a.meta["task"], b.meta["task"]])
                  for space in ("factors", "delta")]
    rows = []
    for name, path, on in cases:
        for r in case_rows(name, path, model, [evals[n] for n in on], search):
            r["ok"] = r["evals"] <= 15 and (r["rel_err"] <= TOLERANCE or r["abs_err"] <= 1e-6)
            rows.append(r)
            print(f"{r['case']:<34} {r['task']:<8} {r['grid101']:>8.4f} {r['auto']:>8.4f} {r['evals']:>5d} "
                  f"{r['argmax_t']:>6.3f} {r['abs_err']:>8.5f} {r['rel_err']:>8.2%} {'yes' if r['ok'] else 'NO':>3} "
                  f"{r['grid_s']:>7.1f} {r['auto_s']:>7.1f}", flush=True)
    print(f"within {TOLERANCE:.0%} in <= 15 points: {sum(r['ok'] for r in rows)}/{len(rows)} cases; "
          f"max evaluations {max(r['evals'] for r in rows)}")


if __name__ == "__main__":
    main()
