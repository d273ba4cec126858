"""Reports over finished runs: a methods × tasks table (final scores, OP/BWT/FWT) and R heatmaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mcl.errors import MclError
from mcl.io import atomic_path, write_text_atomic


def read_run(run_dir: str | Path) -> dict:
    """Config, summary and R matrices of one finished run."""
    run_dir = Path(run_dir)
    summary_file = run_dir / "metrics" / "summary.json"
    if not summary_file.is_file():
        raise MclError(f"{run_dir} is not a finished run (no metrics/summary.json)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads(summary_file.read_text())
    R = {p.stem: pd.read_csv(p, index_col=0) for p in sorted((run_dir / "metrics").glob("R*.csv"))}
    return {"dir": run_dir, "config": cfg, "summary": summary, "R": R}


def run_label(run: dict) -> str:
    """Method, its non-default arguments and the seed, for table rows."""
    cfg = run["config"]
    args = ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("method_args", {}).items()))
    return f"{cfg['method']}{f' ({args})' if args else ''} (seed {cfg['train']['seed']})"


def summary_table(runs: list[dict], kind: str = "score") -> pd.DataFrame:
    """One row per run and evaluation view: final score per task, then OP, BWT, FWT, forgetting."""
    rows = []
    for run in runs:
        s = run["summary"]
        for view in s["views"]:
            suffix = "" if view == s["primary_view"] else f"_{view}"
            key = f"R{suffix}" if kind == "score" else f"R_loss{suffix}"
            if key not in run["R"]:
                continue
            final = run["R"][key].iloc[-1]
            label = run_label(run) + ("" if not suffix else f" [{view}]")
            row = {"run": label, **{t: final[t] for t in s["tasks"]}, **s[f"{kind}{suffix}"]}
            rows.append(row)
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of rows that differ only by seed."""
    if table.empty:
        return table
    keys = table.index.str.replace(r" \(seed \d+\)", "", regex=True)
    grouped = table.groupby(keys)
    mean, std, n = grouped.mean(), grouped.std().fillna(0.0), grouped.size()
    out = mean.map(lambda v: f"{v:.3f}").astype(str) + " ± " + std.map(lambda v: f"{v:.3f}").astype(str)
    out.insert(0, "seeds", n)
    return out


def heatmaps(run: dict, out_dir: Path) -> list[Path]:
    """R-matrix heatmaps of one run as PNG (matplotlib) and HTML (plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    written = []
    for name, R in run["R"].items():
        stem = f"{run['dir'].name}-{name}"
        fig, ax = plt.subplots(figsize=(1 + 0.8 * R.shape[1], 1 + 0.5 * R.shape[0]))
        im = ax.imshow(R.values, cmap="viridis" if not name.startswith("R_loss") else "magma_r", aspect="auto")
        ax.set_xticks(range(R.shape[1]), R.columns, rotation=45, ha="right")
        ax.set_yticks(range(R.shape[0]), [f"after {r}" for r in R.index])
        for (k, i), v in np.ndenumerate(R.values):
            ax.text(i, k, f"{v:.2f}", ha="center", va="center", color="w", fontsize=7)
        ax.set_title(f"{run['config']['method']}: {name}")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        with atomic_path(out_dir / f"{stem}.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        hfig = go.Figure(go.Heatmap(z=R.values, x=list(R.columns), y=[f"after {r}" for r in R.index], text=R.round(3).values,
                                    texttemplate="%{text}"))
        hfig.update_layout(title=f"{run['config']['method']}: {name}", yaxis_autorange="reversed")
        write_text_atomic(out_dir / f"{stem}.html", hfig.to_html(include_plotlyjs="cdn"))
        written += [out_dir / f"{stem}.png", out_dir / f"{stem}.html"]
    return written


def report(run_dirs: list[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Write report.md / report.csv (per run and aggregated over seeds) and heatmaps; return the table."""
    out_dir = Path(out_dir)
    runs = [read_run(d) for d in run_dirs]
    table = summary_table(runs)
    if table.empty:
        table = summary_table(runs, kind="loss")
    with atomic_path(out_dir / "report.csv", suffix=".csv") as tmp:
        table.to_csv(tmp)
    agg = aggregate(table)
    md = ["# mcl report", "", "## Per run (final scores; OP/BWT/FWT/forgetting)", "", table.round(4).to_markdown(), "",
          "## Mean ± std over seeds", "", agg.to_markdown(), ""]
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    for run in runs:
        heatmaps(run, out_dir)
    return table
