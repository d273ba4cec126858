"""Figures: path curves (one line per task), barrier-matrix heatmaps, plane contours; PNG and HTML.

Each plot function returns its matplotlib Figure (built when a PNG is asked for or no HTML is), so a
notebook shows it directly. Static figures use matplotlib's object API (`Figure`, no pyplot, so no global
backend state: the Agg canvas renders them); interactive ones use plotly, written by `mcl.html` as pages
that carry plotly.js themselves (`plotlyjs`: "embedded" by default, gzip-compressed; see `mcl.html`), so a
copied HTML file still renders offline. A barrier matrix's panels share one colour scale anchored at 0
(a zero barrier is drawn as zero); a plane's panels fill their cells, each with its own labelled colour bar.
Every file is written atomically.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize, to_hex
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from mcl.analysis.matrix import BarrierMatrix
from mcl.analysis.plane import Plane
from mcl.html import check_plotlyjs, write_figure_html
from mcl.io import atomic_path

PathLike = str | os.PathLike


def save_png(fig: Figure, dest: PathLike) -> None:
    """Write a matplotlib figure as PNG atomically."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _text_colour(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _plotly_colorscale(cmap: Colormap, n: int = 11) -> list[list[Any]]:
    """A matplotlib colormap as a plotly colorscale, so the PNG and the HTML draw a value in one colour."""
    return [[k / (n - 1), to_hex(cmap(k / (n - 1)))] for k in range(n)]


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    panels = [("loss", "loss (nats / answer token)")]
    if "metric" in frame and frame["metric"].notna().any():
        panels.append(("metric", "metric"))
    return panels


def plot_path(frame: pd.DataFrame, png: PathLike | None = None, html: PathLike | None = None, title: str = "",
              plotlyjs: str = "embedded") -> Figure | None:
    """Loss (and metric, when present) along t per task of a sweep frame (bands from loss_low/loss_high); returns the Figure."""
    check_plotlyjs(plotlyjs)  # before the PNG is written
    panels = _panels(frame)
    names = {task: g["metric_name"].iloc[0] for task, g in frame.groupby("task", sort=False)}
    static = None
    if png or not html:  # the static figure: saved as PNG, and returned (notebooks show it)
        fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
        for k, (col, label) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), k + 1)
            for task, g in frame.groupby("task", sort=False):
                g = g.sort_values("t")
                line, = ax.plot(g["t"], g[col], marker="o", ms=3, label=task if col == "loss" else f"{task} ({names[task]})")
                if col == "loss" and "loss_low" in g:
                    ax.fill_between(g["t"], g["loss_low"], g["loss_high"], color=line.get_color(), alpha=0.2, lw=0)
            ax.set_xlabel("t")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        static = fig
        if png:
            save_png(fig, png)
    if html:
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[label for _, label in panels])
        for k, (col, _) in enumerate(panels):
            for n, (task, g) in enumerate(frame.groupby("task", sort=False)):
                g = g.sort_values("t")
                if col == "loss" and "loss_low" in g:
                    band = pd.concat([g["t"], g["t"][::-1]]), pd.concat([g["loss_high"], g["loss_low"][::-1]])
                    fig.add_trace(go.Scatter(x=band[0], y=band[1], fill="toself", fillcolor=_color(n), opacity=0.2,
                                             line={"width": 0}, legendgroup=task, showlegend=False, hoverinfo="skip"),
                                  row=1, col=k + 1)
                fig.add_trace(go.Scatter(x=g["t"], y=g[col], mode="lines+markers", name=task, legendgroup=task,
                                         showlegend=k == 0, line={"color": _color(n)}), row=1, col=k + 1)
            fig.update_xaxes(title_text="t", row=1, col=k + 1)
        fig.update_layout(title=title, template="plotly_white")
        write_figure_html(fig, html, plotlyjs)
    return static


def _color(n: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return palette[n % len(palette)]


def _grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def barrier_scale(mats: dict[str, pd.DataFrame]) -> tuple[Colormap, Normalize]:
    """One colour scale for every panel, anchored at 0: a zero barrier is the lightest colour.

    Sequential from 0 to the largest barrier (magma_r) when none is negative, diverging around a white 0
    (RdBu_r, symmetric) when some are; panels that are all 0 get 0…1, so they draw as zero.
    """
    values = np.concatenate([m.values.ravel() for m in mats.values()]) if mats else np.zeros(0)
    values = values[np.isfinite(values)]
    lo, hi = min(values.min(initial=0.0), 0.0), max(values.max(initial=0.0), 0.0)
    if lo < 0:
        bound = max(-lo, hi)
        return colormaps["RdBu_r"], Normalize(-bound, bound)
    return colormaps["magma_r"], Normalize(0.0, hi if hi > 0 else 1.0)


def plot_barrier_matrix(bm: BarrierMatrix, png: PathLike | None = None, html: PathLike | None = None,
                        measure: str = "loss", metric: str = "max_minus_linear", plotlyjs: str = "embedded"
                        ) -> Figure | None:
    """One heatmap per task of a barrier metric over all checkpoint pairs, one shared scale from 0; returns the Figure."""
    check_plotlyjs(plotlyjs)  # before the PNG is written
    tasks = list(dict.fromkeys(bm.barriers["task"])) if len(bm.barriers) else []
    rows, cols = _grid_shape(max(len(tasks), 1))
    mats = {t: bm.matrix(t, measure, metric) for t in tasks}
    cmap, norm = barrier_scale(mats)
    title, label = f"{measure} barrier ({metric})", f"{measure} barrier"
    static = None
    if png or not html:  # the static figure: saved as PNG, and returned (notebooks show it)
        fig = Figure(figsize=(3.4 * cols + 1, 3.0 * rows + 0.5), layout="constrained")
        axes = []
        for k, (task, m) in enumerate(mats.items()):
            ax = fig.add_subplot(rows, cols, k + 1)
            im = ax.imshow(m.values, cmap=cmap, norm=norm)
            ax.set_xticks(range(len(m)), m.columns, rotation=60, fontsize=7, ha="right")
            ax.set_yticks(range(len(m)), m.index, fontsize=7)
            for (i, j), v in np.ndenumerate(m.values):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color=_text_colour(cmap(norm(v))))
            ax.set_title(task, fontsize=9)
            axes.append(ax)
        if axes:
            fig.colorbar(im, ax=axes, label=label, shrink=0.9 if rows == 1 else 0.6)
        fig.suptitle(title)
        static = fig
        if png:
            save_png(fig, png)
    if html:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks)
        for k, (task, m) in enumerate(mats.items()):
            fig.add_trace(go.Heatmap(z=m.values, x=list(m.columns), y=list(m.index), coloraxis="coloraxis",
                                     text=np.round(m.values, 3), texttemplate="%{text}", name=task),
                          row=k // cols + 1, col=k % cols + 1)
        fig.update_yaxes(autorange="reversed")  # the first checkpoint on top, as in the PNG
        fig.update_layout(title=title, template="plotly_white", height=120 + 330 * rows,
                          coloraxis={"colorscale": _plotly_colorscale(cmap), "cmin": norm.vmin, "cmax": norm.vmax,
                                     "colorbar": {"title": {"text": label}}})
        write_figure_html(fig, html, plotlyjs)
    return static


TRAJECTORY_COLORS = ("#ff7f0e", "#00bfff", "#ff00ff", "#ffd700")  # orange, sky blue, magenta, gold


def plot_plane(pl: Plane, png: PathLike | None = None, html: PathLike | None = None, measure: str = "loss",
               plotlyjs: str = "embedded") -> Figure | None:
    """Contours of a measure over the plane, one panel per task, with a, b, c, the drawn path and any
    trajectories; returns the Figure.

    Panels fill their cells (no equal aspect: the plane's two axes often span very different lengths),
    each with its own colour bar, as tall as the panel and labelled with the measure.
    """
    check_plotlyjs(plotlyjs)  # before the PNG is written
    tasks = list(dict.fromkeys(pl.frame["task"]))
    rows, cols = _grid_shape(len(tasks))
    grids = {t: pl.frame[pl.frame.task == t].pivot_table(index="y", columns="x", values=measure) for t in tasks}
    static = None
    if png or not html:  # the static figure: saved as PNG, and returned (notebooks show it)
        fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
        for k, (task, z) in enumerate(grids.items()):
            ax = fig.add_subplot(rows, cols, k + 1)
            cs = ax.contourf(z.columns, z.index, z.values, levels=20, cmap="viridis")
            fig.colorbar(cs, ax=ax, label=measure, aspect=30, pad=0.02)
            if pl.curve is not None:
                ax.plot(pl.curve["x"], pl.curve["y"], color="white", lw=1.5)
            for j, (name, t) in enumerate(pl.trajectories.items()):
                ax.plot(t["x"], t["y"], "-o", color=TRAJECTORY_COLORS[j % len(TRAJECTORY_COLORS)], ms=3, lw=1.2,
                        label=name)
            if pl.trajectories and k == 0:
                ax.legend(fontsize=7, loc="best")
            for name, (x, y) in pl.anchors.items():
                ax.plot(x, y, "o", color="white", mec="black")
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), color="white")
            ax.set_xlabel("along b − a")
            ax.set_ylabel("towards c")
            ax.set_title(f"{task} ({measure}, {pl.space})", fontsize=9)
        static = fig
        if png:
            save_png(fig, png)
    if html:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.16)
        for k, (task, z) in enumerate(grids.items()):
            r, c = k // cols + 1, k % cols + 1
            fig.add_trace(go.Contour(x=list(z.columns), y=list(z.index), z=z.values, colorscale="Viridis", name=task,
                                     colorbar=_colorbar_beside(fig, k, measure)), row=r, col=c)
            if pl.curve is not None:
                fig.add_trace(go.Scatter(x=pl.curve["x"], y=pl.curve["y"], mode="lines", line={"color": "white"},
                                         name="path", showlegend=False), row=r, col=c)
            for j, (name, t) in enumerate(pl.trajectories.items()):
                fig.add_trace(go.Scatter(x=t["x"], y=t["y"], mode="lines+markers", name=name, text=t["step"],
                                         line={"color": TRAJECTORY_COLORS[j % len(TRAJECTORY_COLORS)]},
                                         showlegend=k == 0), row=r, col=c)
            xs, ys = zip(*pl.anchors.values())
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=list(pl.anchors), textposition="top right",
                                     textfont={"color": "white"}, marker={"color": "white", "line": {"color": "black", "width": 1}},
                                     showlegend=False), row=r, col=c)
        fig.update_xaxes(title_text="along b − a")
        fig.update_yaxes(title_text="towards c")
        fig.update_layout(title=f"{measure} over the plane ({pl.space})", template="plotly_white",
                          height=120 + 380 * rows, legend={"orientation": "h", "y": -0.15})
        write_figure_html(fig, html, plotlyjs)
    return static


def _colorbar_beside(fig: go.Figure, k: int, title: str) -> dict[str, Any]:
    """A colour bar just right of subplot k, as tall as it (plotly otherwise stacks every bar at the right edge)."""
    xaxis, yaxis = fig.layout[f"xaxis{k + 1 if k else ''}"], fig.layout[f"yaxis{k + 1 if k else ''}"]
    return {"title": {"text": title, "side": "right"}, "x": xaxis.domain[1] + 0.01, "xanchor": "left",
            "y": sum(yaxis.domain) / 2, "len": yaxis.domain[1] - yaxis.domain[0], "thickness": 12}
