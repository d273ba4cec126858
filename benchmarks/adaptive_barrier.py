"""Adaptive barrier search vs a 1001-point reference and a uniform grid of equal cost, curve by curve.

Run: `python benchmarks/adaptive_barrier.py [RUN_DIR] [--examples 50] [--threads 1] [--reference 1001]`.
The suite: analytic loss curves (`CURVES`: smooth peaks at several t, narrow peaks down to a half-width
at half maximum of 0.025, two peaks incl. a broad lower bump beside a higher narrow one, a flat pair
with barrier 0, a narrow peak on a convex curve), plus, given RUN_DIR (a SeqFT run on the shipped tiny
model, e.g. `mcl train configs/tiny-suite-seq.yaml "tasks=[stance,fomc,meeting]" train.steps_per_task=100
eval.generate=false`), the real factor-space paths between its consecutive task adapters, scored on
both tasks of each pair. Per curve it prints the reference barrier (max above the chord on `--reference`
points), the search's barrier, its evaluations, the evaluations after which it was first within 2 % of
the reference, a uniform grid's barrier with as many points, and the search's verdict (resolved, or why
not). Then a family of random curves (one or two Gaussian bumps of random place, height and width on a
random straight or curved base) as a stress test. Evaluation counts are deterministic, so
tests/test_analysis_adaptive.py asserts the analytic suite's targets (`check`): median evaluations to
within 2 % ≤ 9, never worse than the uniform grid by more than the search's tolerance, every miss flagged.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mcl.analysis import AdaptiveSearch, barriers, search_barrier

TOLERANCE = 0.02
LN2 = math.log(2.0)


def bump(center: float, half_width: float) -> Callable[[float], float]:
    """A Gaussian bump of height 1 at `center` with the given half-width at half maximum."""
    return lambda t: math.exp(-LN2 * ((t - center) / half_width) ** 2)


def curve(base: Callable[[float], float], *bumps: tuple[float, Callable[[float], float]]) -> Callable[[float], float]:
    """base(t) plus height × bump(t) for every (height, bump)."""
    return lambda t: float(base(t) + sum(h * b(t) for h, b in bumps))


CURVES: dict[str, Callable[[float], float]] = {
    "smooth peak t=0.30": curve(lambda t: 2.0 + 0.5 * t, (1.2, bump(0.30, 0.18))),
    "smooth peak t=0.62": curve(lambda t: 1.5 - 0.3 * t, (0.8, bump(0.62, 0.20))),
    "smooth peak t=0.81": curve(lambda t: 1.0 + 1.0 * t, (0.6, bump(0.81, 0.12))),
    "skewed peak t=0.32": lambda t: 1.0 + 0.2 * t + math.sin(math.pi * t ** 0.6),
    "narrow 0.06 at t=0.37": curve(lambda t: 1.0 + 0.5 * t, (2.0, bump(0.37, 0.06))),
    "narrow 0.04 at t=0.81": curve(lambda t: 1.0 + 0.5 * t, (2.0, bump(0.81, 0.04))),
    "narrow 0.025 at t=0.625": curve(lambda t: 1.0 + 0.5 * t, (2.0, bump(0.625, 0.025))),
    "broad 0.30 + higher narrow 0.72": curve(lambda t: 1.0 + 0.2 * t, (1.0, bump(0.30, 0.15)), (1.6, bump(0.72, 0.05))),
    "two smooth peaks 0.25, 0.70": curve(lambda t: 1.0, (0.8, bump(0.25, 0.12)), (0.9, bump(0.70, 0.12))),
    "flat pair, barrier 0": lambda t: 1.0 + 0.6 * (t - 0.3) ** 2,
    "narrow 0.025 on a convex curve": curve(lambda t: 1.0 + 2.0 * (t - 0.5) ** 2, (1.0, bump(0.58, 0.025))),
}


def barrier(t, v) -> float:
    """Loss barrier (max above the chord) of points in any order."""
    order = np.argsort(t)
    return barriers(np.asarray(t)[order], np.asarray(v)[order])["max_minus_linear"]


def score(name: str, f: Callable[[float], float], search: AdaptiveSearch, reference: int = 1001) -> dict:
    """One curve: reference, search and uniform-grid barriers, evaluations, evaluations to within 2 %, verdict."""
    grid = np.linspace(0.0, 1.0, reference)
    ref = barrier(grid, [f(t) for t in grid])
    t0 = time.perf_counter()
    found = search_barrier(f, search)
    seconds = time.perf_counter() - t0
    n = len(found.t)
    close = lambda b: b >= (1.0 - TOLERANCE) * ref - 1e-9  # noqa: E731  (a coarse reference may lie below)
    to_2pc = next((k for k in range(search.coarse, n + 1) if close(barrier(found.t[:k], found.v[:k]))), None)
    uniform = np.linspace(0.0, 1.0, n)
    return {"case": name, "reference": ref, "auto": barrier(found.t, found.v), "evals": n, "to_2pc": to_2pc,
            "uniform": barrier(uniform, [f(t) for t in uniform]), "resolved": found.resolved,
            "reason": found.reason, "search_s": seconds}


def check(rows: list[dict], rtol: float) -> dict:
    """The suite's targets: median evaluations to within 2 %, cases worse than the uniform grid, silent misses."""
    return {"median_to_2pc": statistics.median(r["to_2pc"] or math.inf for r in rows),
            "median_evals": statistics.median(r["evals"] for r in rows),
            "worse_than_uniform": [r["case"] for r in rows if r["auto"] < r["uniform"] - rtol * r["reference"]],
            "silent_misses": [r["case"] for r in rows if r["to_2pc"] is None and r["resolved"]]}


def real_curves(run: Path, examples: int) -> Iterator[tuple[str, Callable[[float], float]]]:
    """Loss along factor-space lines on the tiny model: the built barrier pair (benchmarks/barrier_pair.py) and the
    run's first two task adapters as they are, each on both tasks."""
    import tempfile

    from barrier_pair import build_pair, task_dirs

    from mcl.adapters import read_adapter
    from mcl.analysis import evaluators
    from mcl.models import load_base
    from mcl.paths import Linear
    from mcl.paths.merged_forward import bind_for_forward

    first, second = task_dirs(run)[:2]
    with tempfile.TemporaryDirectory() as tmp:
        built = [read_adapter(d) for d in build_pair(run, Path(tmp))]
    plain = [read_adapter(first), read_adapter(second)]
    model, tok = load_base(plain[0].base_model)
    names = [s.meta["task"] for s in plain]
    evals = dict(zip(names, evaluators(tok, names, "eval", 50, 256, examples)))
    for label, (a, b) in ((f"barrier pair {first.name}→{second.name}(−A,−B/4)", built),
                          (f"{first.name}→{second.name}", plain)):
        path = Linear(a, b, space="factors")
        for task in names:
            with bind_for_forward(path, model) as live:
                def loss(t: float, live=live, path=path, task=task) -> float:
                    live.apply(path.point(t))
                    return evals[task].loss_evaluator.loss(live.model)

                yield f"{label}, {task}", loss


def random_curves(n: int, seed: int = 0) -> Iterator[tuple[str, Callable[[float], float]]]:
    """Stress family: 1-2 Gaussian bumps (half-width 0.025-0.3, anywhere in (0.05, 0.95)) on random bases."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        bumps = [(rng.uniform(0.2, 3.0), bump(rng.uniform(0.05, 0.95), math.exp(rng.uniform(math.log(0.025),
                                                                                                math.log(0.3)))))
                 for _ in range(rng.integers(1, 3))]
        a0, slope, bend = rng.uniform(0.5, 3.0), rng.uniform(-1.0, 1.0), rng.choice([0.0, rng.uniform(-1.0, 2.0)])
        yield f"random {i}", curve(lambda t, a0=a0, s=slope, c=bend: a0 + s * t + c * (t - 0.5) ** 2, *bumps)


def print_rows(rows: list[dict]) -> None:
    """The per-curve table."""
    print(f"{'case':<44} {'reference':>9} {'auto':>8} {'evals':>5} {'to 2%':>5} {'uniform':>8} {'resolved':>8}  reason")
    for r in rows:
        print(f"{r['case']:<44} {r['reference']:>9.4f} {r['auto']:>8.4f} {r['evals']:>5d} "
              f"{r['to_2pc'] if r['to_2pc'] is not None else 'miss':>5} {r['uniform']:>8.4f} "
              f"{'yes' if r['resolved'] else 'NO':>8}  {r['reason'] or ''}", flush=True)


def main() -> None:
    """Score the suite (and the run's real pairs), print the tables and the targets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="a SeqFT run directory (runs/<name>) on the tiny model")
    ap.add_argument("--examples", type=int, default=50, help="eval examples per task for real pairs (default 50)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", type=int, default=1001, help="points of the reference grid (default 1001)")
    ap.add_argument("--random", type=int, default=400, help="curves in the random stress family (default 400)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    search = AdaptiveSearch()
    print(f"adaptive search: {vars(search)}; reference {args.reference} points; within {TOLERANCE:.0%}")
    rows = [score(name, f, search, args.reference) for name, f in CURVES.items()]
    if args.run:
        rows += [score(name, f, search, args.reference) for name, f in real_curves(args.run, args.examples)]
    print_rows(rows)
    print("suite:", check(rows, search.rtol))
    stress = [score(name, f, search, args.reference) for name, f in random_curves(args.random)]
    result = check(stress, search.rtol)
    print(f"random family ({args.random} curves): median evaluations {result['median_evals']}, median to within 2% "
          f"{result['median_to_2pc']}, unresolved {sum(not r['resolved'] for r in stress)}, worse than uniform "
          f"{len(result['worse_than_uniform'])}, silent misses {len(result['silent_misses'])}")


if __name__ == "__main__":
    main()
