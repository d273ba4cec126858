"""Table: every continual-learning method on the tiny 8-task suite, several seeds, one budget.

Runs each (method, seed) with the same steps, batch, buffer and LoRA settings (base config:
configs/tiny-suite-seq.yaml), `--jobs` runs at a time with one thread each, seed by seed (so a
partial grid holds whole seeds), then writes results/cl_comparison/report.{md,csv} (final scores,
OP/BWT/FWT/forgetting, mean ± std over seeds), R heatmaps via `mcl report`, every run's R.csv,
R_loss.csv, summary.json and per-example scores (examples/phase-<k>.csv.gz) under runs/, the per-seed paired difference of each `--pair A B`
(paired_*.csv), and the README's two tables: methods.md (mean ± std, every learner view) and paired.md.
A method is a name or `name:key=value,...` (method_args; a dotted key is a config key), e.g.
`ilora:ema_lambda=0.9` or `ilora:consistency_weight=0.1,train.lr_schedule=constant`.
Finished runs are reused (runs are named by config hash).
`--config` swaps the base config (e.g. configs/smollm2-subset.yaml for the SmolLM2 grid).
    python analysis/cl_comparison.py [--methods ...] [--seeds 0 1 2] [--steps 100] [--jobs 2] [--config FILE]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from common import ROOT, finished_run, report, run_name, train_grid
from tables import methods_md, paired_md

from mcl.io import atomic_path, write_text_atomic

METHODS = ["seq", "er", "ewc", "agem", "olora", "mtl", "one", "ilora", "ilora-released"]
CONFIG = "configs/tiny-suite-seq.yaml"
REPLAY = {"er", "agem", "gem", "ilora", "ilora-released", "ilora-as-released"}
KEPT = ("R.csv", "R_loss.csv", "R_fast.csv", "R_loss_fast.csv", "R_slow.csv", "R_loss_slow.csv", "summary.json")


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,...` -> (name, method_args as written)."""
    name, _, args = spec.partition(":")
    return name, dict(kv.split("=", 1) for kv in args.split(",") if kv)


def overrides(spec: str, seed: int, steps: int, eval_examples: int, buffer: int, tasks: str | None = None) -> list[str]:
    """`mcl train` overrides of one (method variant, seed); `tasks` (e.g. "stance, fomc") replaces the suite."""
    name, args = parse_method(spec)
    config = {k: v for k, v in args.items() if "." in k}  # e.g. train.lr_schedule=constant: a config key, not a method arg
    args = {k: v for k, v in args.items() if "." not in k}
    if name in REPLAY:
        args = {"buffer_size": str(buffer), **args}
    over = [f"method={name}", f"train.seed={seed}", f"train.steps_per_task={steps}", f"eval.max_examples={eval_examples}"]
    over += [f"tasks=[{tasks}]"] if tasks else []
    over += [f"{k}={v}" for k, v in config.items()]
    return over + [f"method_args={{{', '.join(f'{k}: {v}' for k, v in args.items())}}}"]  # always: a config's own are replaced


def keep_runs(grid: list[tuple[str, int]], run_dirs: list[str], out: Path) -> None:
    """Copy each run's R matrices, summary and variant spec to out/runs/<variant>-seed<s>/ (README numbers recompute)."""
    for (spec, seed), run in zip(grid, run_dirs):
        dest = out / "runs" / f"{run_name(spec)}-seed{seed}"
        dest.mkdir(parents=True, exist_ok=True)
        for name in KEPT:  # text files, each written atomically
            if (Path(run) / "metrics" / name).exists():
                write_text_atomic(dest / name, (Path(run) / "metrics" / name).read_text())
        for src in sorted((Path(run) / "metrics" / "examples").glob("phase-*.csv.gz")):  # per-example scores
            with atomic_path(dest / "examples" / src.name, suffix=".gz") as tmp:
                tmp.write_bytes(src.read_bytes())
        write_text_atomic(dest / "run.txt", f"{Path(run).name}\n")
        write_text_atomic(dest / "spec.txt", f"{spec}\n")  # the method variant as written (tables name it from this)


TABLE_ORDER = ["seq", "er", "ewc", "agem", "gem", "olora", "pp", "l2p", "ilora", "ilora-released", "ilora-as-released",
               "one", "mtl"]


def kept_summaries(out: Path) -> dict[tuple[str, int], dict]:
    """Every kept run's summary under out/runs/, keyed by (method variant as in spec.txt, seed), in table order."""
    found = {}
    for d in (out / "runs").glob("*-seed*"):
        if (d / "summary.json").is_file() and (d / "spec.txt").is_file():
            seed = int(d.name.rpartition("-seed")[2])
            found[((d / "spec.txt").read_text().strip(), seed)] = json.loads((d / "summary.json").read_text())

    def rank(key: tuple[str, int]) -> tuple:
        base = key[0].partition(":")[0]
        return (TABLE_ORDER.index(base) if base in TABLE_ORDER else len(TABLE_ORDER), key[0], key[1])

    return {k: found[k] for k in sorted(found, key=rank)}


def summaries(grid: list[tuple[str, int]], run_dirs: list[str]) -> dict[tuple[str, int], dict]:
    """Each (method variant, seed)'s summary.json."""
    return {key: json.loads((Path(run) / "metrics" / "summary.json").read_text()) for key, run in zip(grid, run_dirs)}


def paired(summary: dict[tuple[str, int], dict], a: str, b: str, out: Path) -> list[dict]:
    """Per-seed OP/BWT/forgetting (score; loss: also FWT) of a minus b, seeds both have; kept as paired_<a>_minus_<b>.csv."""
    rows = []
    for seed in sorted({s for _, s in summary}):
        if (a, seed) in summary and (b, seed) in summary:
            sa, sb = (summary[(m, seed)]["score"] for m in (a, b))  # the primary view (I-LoRA: slow)
            la, lb = (summary[(m, seed)]["loss"] for m in (a, b))
            rows.append({"seed": seed, **{k: round(sa[k] - sb[k], 4) for k in ("OP", "BWT", "forgetting")},
                         **{f"loss_{k}": round(la[k] - lb[k], 4) for k in ("OP", "BWT", "FWT", "forgetting")}})
    if rows:
        name = run_name(f"paired_{a}_minus_{b}")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(out / f"{name}.csv", buf.getvalue())
        print(f"{a} - {b} per seed: {rows}")
    return rows


def main() -> None:
    """Run the grid, then `mcl report` over all runs, keep their matrices, and write the paired difference."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--buffer", type=int, default=200)
    p.add_argument("--eval-examples", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tasks", help='a sub-stream instead of the 8 tasks, e.g. "stance, fomc, meeting"')
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="methods for the per-seed paired difference A - B (repeatable)")
    p.add_argument("--existing-only", action="store_true",
                   help="train nothing: report the (method, seed) runs that have finished and list the missing ones")
    p.add_argument("--from-kept", action="store_true",
                   help="train nothing, need no run dir: rebuild methods.md and paired.md from the files kept in OUT/runs")
    p.add_argument("--config", default=CONFIG, help=f"base config of every run (default {CONFIG})")
    p.add_argument("--out", default=str(ROOT / "results" / "cl_comparison"))
    a = p.parse_args()
    a.out = str(Path(a.out).resolve())  # `mcl report` runs from the repo root: a relative --out must not move
    if a.from_kept:
        summary = kept_summaries(Path(a.out))
        write_text_atomic(Path(a.out) / "methods.md", methods_md(summary))
        write_text_atomic(Path(a.out) / "paired.md", paired_md({(x, y): paired(summary, x, y, Path(a.out)) for x, y in a.pair}))
        return
    grid = [(m, seed) for seed in a.seeds for m in a.methods]
    over = [overrides(m, s, a.steps, a.eval_examples, a.buffer, a.tasks) for m, s in grid]
    if a.existing_only:
        found = [finished_run(a.config, o) for o in over]
        missing = [f"{m} seed {s}" for (m, s), run in zip(grid, found) if run is None]
        keep = [i for i, run in enumerate(found) if run]
        if not keep:
            raise SystemExit("no finished run in this grid")
        grid, runs = [grid[i] for i in keep], [found[i] for i in keep]
    else:
        missing, runs = [], train_grid(a.config, over, a.jobs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "not_run.txt", "".join(f"{m}\n" for m in missing))
    print(f"not run ({len(missing)} of {len(missing) + len(runs)}): {', '.join(missing) or 'none'}")
    report(runs, str(out))
    keep_runs(grid, runs, out)
    summary = summaries(grid, runs)
    pairs = {(x, y): paired(summary, x, y, out) for x, y in a.pair}
    write_text_atomic(out / "methods.md", methods_md(summary))
    write_text_atomic(out / "paired.md", paired_md(pairs))


if __name__ == "__main__":
    main()
