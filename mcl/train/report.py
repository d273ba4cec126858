"""Reports over finished runs: a table of final scores and OP/BWT/FWT that compares like with like, and R heatmaps.

Runs are grouped by everything in their description but the seed (the config, with the method's
resolved arguments from method.json); a group's row label names the method and whatever else differs
between the groups. Groups of several seeds show mean ± std, one seed shows its value. `report.html`
is self-contained (plotly.js embedded once, see `mcl.html`), so it opens offline and can be copied alone.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mcl.errors import MclError
from mcl.io import atomic_path, read_json_record, write_text_atomic

SEED_KEYS = ("train.seed",)  # what differs between the seeds of one experiment


def read_run(run_dir: str | Path) -> dict:
    """Config, resolved method args, summary and R matrices of one finished run."""
    run_dir = Path(run_dir)
    summary_file = run_dir / "metrics" / "summary.json"
    if not summary_file.is_file():
        raise MclError(f"{run_dir} is not a finished run (no metrics/summary.json)")
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        cfg = None
    if not (isinstance(cfg, dict) and isinstance(cfg.get("train"), dict) and isinstance(cfg.get("method"), str)):
        raise MclError(f"{run_dir / 'config.yaml'} is corrupt (expected the run's config: method, train, ...)")
    fix = f"restore it, or rerun the run ({run_dir}) to write it again"
    pinned = run_dir / "method.json"
    method_args = read_json_record(pinned, lambda d: isinstance(d, dict) and isinstance(d.get("args"), dict),
                                   "{method, args}", fix)["args"] if pinned.is_file() else cfg.get("method_args", {})
    summary = read_json_record(summary_file, _is_summary, "{tasks, views, primary_view, ...}", fix)
    R = {p.stem: pd.read_csv(p, index_col=0) for p in sorted((run_dir / "metrics").glob("R*.csv"))}
    return {"dir": run_dir, "config": cfg, "method_args": method_args, "summary": summary, "R": R}


def _is_summary(d: Any) -> bool:
    """metrics/summary.json as `write_metrics` writes it: task and view names, the primary view among them."""
    names = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    return (isinstance(d, dict) and names(d.get("tasks")) and names(d.get("views"))
            and d.get("primary_view") in d["views"])


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):  # an empty mapping (no method args) adds no key
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def description(run: dict) -> dict[str, str]:
    """What the run measures, as dotted keys: its config (defaults filled in) with resolved method args, minus
    the seed and the settings that change no result (name, runs dir, logging, checkpoint interval, eval batch)."""
    from mcl.train.config import config_from_dict, keys_without_results

    try:
        config = config_from_dict(run["config"]).to_dict()  # runs saved before a key existed compare equal
    except MclError:
        config = run["config"]
    flat = _flatten({**config, "method_args": run["method_args"]})
    return {k: v for k, v in flat.items() if k not in keys_without_results() and k not in SEED_KEYS}


def group_labels(runs: list[dict]) -> list[str]:
    """One label per run, equal for runs that differ only by seed: the method and what else differs between runs.

    A key counts as differing when the runs that have it disagree on it; a key only some methods have
    (their arguments) is named only where it differs between runs of methods that have it.
    """
    descs = [description(r) for r in runs]
    keys = sorted({k for d in descs for k in d})
    differing = [k for k in keys if k != "method" and len({d[k] for d in descs if k in d}) > 1]
    labels = []
    for d in descs:
        parts = [f"{k.removeprefix('method_args.')}={d[k]}" for k in differing if k in d]
        labels.append(d["method"] + (f" ({', '.join(parts)})" if parts else ""))
    return labels


def run_label(run: dict) -> str:
    """Method, its resolved arguments and the seed (a run on its own; `group_labels` for several)."""
    args = ", ".join(f"{k}={v}" for k, v in sorted(run["method_args"].items()))
    return f"{run['config']['method']}{f' ({args})' if args else ''} (seed {run['config']['train']['seed']})"


def summary_table(runs: list[dict], kind: str = "score", labels: list[str] | None = None) -> pd.DataFrame:
    """One row per run and evaluation view: final score per task, then OP, BWT, FWT, forgetting.

    Row labels are `<group label>[ [view]] (seed N)`; `labels` gives the group labels (default: `group_labels`).
    """
    labels = labels or group_labels(runs)
    rows = []
    for run, group in zip(runs, labels):
        s = run["summary"]
        for view in s["views"]:
            suffix = "" if view == s["primary_view"] else f"_{view}"
            key = f"R{suffix}" if kind == "score" else f"R_loss{suffix}"
            if key not in run["R"]:
                continue
            final = run["R"][key].iloc[-1]
            label = group + ("" if not suffix else f" [{view}]") + f" (seed {run['config']['train']['seed']})"
            rows.append({"run": label, **{t: final[t] for t in s["tasks"]}, **s[f"{kind}{suffix}"]})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index("run")
    tasks = list(dict.fromkeys(t for run in runs for t in run["summary"]["tasks"]))
    return table[tasks + [c for c in table.columns if c not in tasks]]  # every task before OP, BWT, ...


def markdown(table: pd.DataFrame) -> str:
    """A table as markdown, rounded to 4 places, a task a run lacks shown as "–" (not nan)."""
    return table.round(4).astype(object).where(table.notna(), "–").to_markdown()


def _cell(mean: float, std: float, n: int) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over the seeds of each group (rows equal but for "(seed N)"); one seed shows its value."""
    if table.empty:
        return table
    keys = table.index.str.replace(r" \(seed \d+\)$", "", regex=True)
    grouped = table.groupby(keys, sort=False)
    mean, std, n = grouped.mean(), grouped.std(), grouped.size()
    out = pd.DataFrame({col: [_cell(mean.at[g, col], std.at[g, col], n[g]) for g in mean.index] for col in mean.columns},
                       index=mean.index)
    out.insert(0, "seeds", n)
    return out


def _is_loss(name: str) -> bool:
    return name.startswith("R_loss")


def _scales(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Colour range per matrix kind: scores on [0, 1]; losses on one range over every run of the report."""
    losses = [R.values for run in runs for name, R in run["R"].items() if _is_loss(name)]
    finite = np.concatenate([v[np.isfinite(v)] for v in losses]) if losses else np.array([])
    return {"score": (0.0, 1.0), "loss": (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)}


def _text_colour(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def heatmap_figure(run: dict, name: str, scale: tuple[float, float], title: str):
    """An R matrix as a matplotlib Figure: fixed colour range, readable cell text, labelled colour bar."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    R = run["R"][name]
    cmap, norm = colormaps["magma_r" if _is_loss(name) else "viridis"], Normalize(*scale)
    fig = Figure(figsize=(1.6 + 0.8 * R.shape[1], 1.2 + 0.5 * R.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(R.values, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(R.shape[1]), R.columns, rotation=45, ha="right")
    ax.set_yticks(range(R.shape[0]), [f"after {r}" for r in R.index])
    for (k, i), v in np.ndenumerate(R.values):
        ax.text(i, k, f"{v:.2f}", ha="center", va="center", fontsize=7, color=_text_colour(cmap(norm(v))))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="answer loss (nats/token)" if _is_loss(name) else "task score (metric, 0-1)")
    return fig


def _plotly_heatmap(run: dict, name: str, scale: tuple[float, float], title: str):
    import plotly.graph_objects as go

    R = run["R"][name]
    fig = go.Figure(go.Heatmap(
        z=R.values, x=list(R.columns), y=[f"after {r}" for r in R.index], zmin=scale[0], zmax=scale[1],
        colorscale="Magma" if _is_loss(name) else "Viridis", reversescale=_is_loss(name),
        text=R.round(3).values, texttemplate="%{text}",
        colorbar={"title": {"text": "answer loss" if _is_loss(name) else "task score"}}))
    fig.update_layout(title=title, yaxis_autorange="reversed", template="plotly_white",
                      height=220 + 40 * R.shape[0], width=300 + 80 * R.shape[1])
    return fig


def heatmaps(run: dict, out_dir: Path, label: str | None = None, scales: dict | None = None) -> list[Path]:
    """R-matrix heatmaps of one run as PNG; returns the files written."""
    scales = scales or _scales([run])
    written = []
    for name in run["R"]:
        title = f"{label or run_label(run)}: {name}"
        fig = heatmap_figure(run, name, scales["loss" if _is_loss(name) else "score"], title)
        dest = out_dir / f"{run['dir'].name}-{name}.png"
        with atomic_path(dest, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        written.append(dest)
    return written


def report_html(runs: list[dict], labels: list[str], table: pd.DataFrame, agg: pd.DataFrame,
                scales: dict[str, tuple[float, float]]) -> str:
    """One self-contained HTML page: both tables and every run's interactive heatmaps, plotly.js embedded once."""
    from mcl.html import figure_block, page

    parts = ["<h1>mcl report</h1><h2>Per group: mean ± std over seeds</h2>", agg.to_html(),
             "<h2>Per run (final scores; OP/BWT/FWT/forgetting)</h2>", table.round(4).to_html(na_rep="–")]
    for run, label in zip(runs, labels):
        seed, name = run["config"]["train"]["seed"], run["dir"].name
        parts.append(f"<h2>{html.escape(label)}, seed {seed} ({html.escape(name)})</h2>")
        parts += [figure_block(_plotly_heatmap(run, name, scales["loss" if _is_loss(name) else "score"], name))
                  for name in run["R"]]
    return page("mcl report", parts)


def report(run_dirs: list[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Write report.md / report.csv / report.html (per run and per group) and heatmap PNGs; return the table."""
    out_dir = Path(out_dir)
    runs = [read_run(d) for d in run_dirs]
    labels = group_labels(runs)
    table = summary_table(runs, labels=labels)
    if table.empty:
        table = summary_table(runs, kind="loss", labels=labels)
    with atomic_path(out_dir / "report.csv", suffix=".csv") as tmp:
        table.to_csv(tmp)
    agg = aggregate(table)
    md = ["# mcl report", "", "## Per group: mean ± std over seeds (one seed: its value)", "", agg.to_markdown(), "",
          "## Per run (final scores; OP/BWT/FWT/forgetting)", "", markdown(table), ""]
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    scales = _scales(runs)
    for run, label in zip(runs, labels):
        heatmaps(run, out_dir, label, scales)
    write_text_atomic(out_dir / "report.html", report_html(runs, labels, table, agg, scales))
    return table
