"""The README's result tables as markdown, and their refresh in README.md from the files in results/.

`cl_comparison.py` writes methods.md (mean ± std over seeds, every learner view) and paired.md (per-seed
differences); `claims.py` writes results/claims.md. `python analysis/tables.py` copies each table into
README.md between its `<!-- table: PATH -->` and `<!-- /table -->` markers (written atomically).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from pathlib import Path

from common import ROOT

from mcl.io import write_text_atomic

ARG_LABELS = {"ema_lambda": "λ", "ewc_lambda": "λ", "consistency_weight": "γ", "consistency_target": "target",
              "train.lr_schedule": "schedule"}
NAME_LABELS = {"one": "one (reference)", "mtl": "mtl (reference)", "ilora-released": "ilora-released (λ 0.25)"}
COLUMNS = ("OP", "BWT", "FWT", "forgetting")
MARKER = re.compile(r"(<!-- table: (\S+) -->\n)(.*?)(<!-- /table -->)", re.S)


def label(spec: str) -> str:
    """A method variant as the README names it: `ilora:ema_lambda=0.9,consistency_weight=0.1` -> `ilora λ 0.9, γ 0.1`."""
    name, _, args = spec.partition(":")
    parts = [f"{ARG_LABELS.get(k, k)} {v}" for k, v in (kv.split("=", 1) for kv in args.split(",") if kv)]
    return NAME_LABELS.get(name, name) + (" " + ", ".join(parts) if parts else "")


def _cell(values: list[float]) -> str:
    """Mean ± sample std of the finite values ('—' if none; the value alone for one)."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    return f"{v[0]:.3f}" if len(v) == 1 else f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"


def methods_md(summaries: dict[tuple[str, int], dict]) -> str:
    """One row per (method variant, learner view): seeds, OP/BWT/FWT/forgetting of the score, the loss OP and FWT."""
    lines = ["| method | seeds | " + " | ".join(COLUMNS) + " | loss OP | loss FWT |", "|---" * (len(COLUMNS) + 4) + "|"]
    for spec in dict.fromkeys(s for s, _ in summaries):
        runs = [v for (s, _), v in summaries.items() if s == spec]
        primary = runs[0].get("primary_view", "main")
        for view in [primary] + [v for v in runs[0].get("views", []) if v != primary]:
            suffix = "" if view == primary else f"_{view}"
            name = label(spec) + (f", {view} learner" if len(runs[0].get("views", [])) > 1 else "")
            cells = [_cell([r[f"score{suffix}"][k] for r in runs]) for k in COLUMNS]
            cells += [_cell([r[f"loss{suffix}"][k] for r in runs]) for k in ("OP", "FWT")]
            lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_md(pairs: dict[tuple[str, str], list[dict]]) -> str:
    """Per-seed differences A − B of OP, BWT, forgetting (score) and the loss OP and FWT, one row per (pair, seed)."""
    lines = ["| variant | minus | seed | OP | BWT | forgetting | loss OP | loss FWT |", "|---" * 8 + "|"]
    for (a, b), rows in pairs.items():
        for r in rows:
            lines.append(f"| {label(a)} | {label(b)} | {r['seed']} | {r['OP']:+.3f} | {r['BWT']:+.3f} | "
                         f"{r['forgetting']:+.3f} | {r['loss_OP']:+.3f} | {r['loss_FWT']:+.3f} |")
    return "\n".join(lines) + "\n"


def refresh(readme: Path, root: Path = ROOT) -> list[str]:
    """Replace every marked table in `readme` with its file's current text; return the files copied."""
    text, copied = readme.read_text(), []

    def swap(m: re.Match) -> str:
        source = root / m.group(2)
        if not source.exists():
            raise SystemExit(f"{readme.name}: table source {m.group(2)} does not exist")
        copied.append(m.group(2))
        body = "\n".join(ln for ln in source.read_text().splitlines() if ln.startswith("|"))  # the table lines only
        return f"{m.group(1)}{body}\n{m.group(4)}"

    write_text_atomic(readme, MARKER.sub(swap, text))
    return copied


def main() -> None:
    """Refresh README.md's marked tables from results/."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    a = p.parse_args()
    print("refreshed from " + ", ".join(refresh(Path(a.readme))))


if __name__ == "__main__":
    main()
