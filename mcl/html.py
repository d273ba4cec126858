"""Self-contained HTML pages of plotly figures: every HTML file mcl writes is built here.

A page carries plotly.js itself, so it opens offline and still renders when copied elsewhere on its own;
it loads nothing from a network. By default ("embedded") the 4.8 MB plotly.min.js goes in once per page,
gzip-compressed and base64-encoded (2.0 MB; the compressed bundle is kept in mcl's cache dir), and the
browser unpacks it with `DecompressionStream` (Chrome/Edge 80+, Firefox 113+, Safari 16.4+) before
drawing the page's figures. "plain" embeds the
uncompressed bundle (4.8 MB, any browser); "directory" writes one shared `plotly.min.js` beside the page
(small pages, which render only beside that file). Figures go in as JSON (`figure_block`) and are drawn by
one script at the end of the page, after plotly.js is loaded. plotly is imported only when a page is built.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcl.errors import MclError
from mcl.io import atomic_path, cache_root, write_text_atomic

PLOTLY_JS = "plotly.min.js"
PAGE_STYLE = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:13px}"
              " td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}")

# Draws every figure block once plotly.js is loaded (`ready`: a promise); a failure is shown on the page.
DRAW = """<script>
(async () => {
  await ready;
  for (const block of document.querySelectorAll("script.mcl-figure")) {
    const spec = JSON.parse(block.textContent), div = document.createElement("div");
    block.before(div);
    await Plotly.newPlot(div, spec.data, spec.layout, {responsive: true});
  }
})().catch(e => document.body.insertAdjacentHTML("afterbegin",
  "<p style='color:#b00'>figures not drawn: " + e + " (this page needs a browser with DecompressionStream:" +
  " Chrome/Edge 80+, Firefox 113+, Safari 16.4+; or write it with plotlyjs='plain')</p>"));
</script>"""


@functools.cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@functools.cache
def _plotly_js_gzip_base64() -> str:
    """plotly.js gzip-compressed and base64-encoded; the compressed bundle is kept in mcl's cache dir (named by
    the bundle's hash, checked against the bundle on every read), since compressing it takes about a second."""
    js = _plotly_js().encode()
    kept = cache_root() / "plotly" / f"plotly-{hashlib.sha256(js).hexdigest()[:16]}.min.js.gz"
    try:
        packed = kept.read_bytes()
        if gzip.decompress(packed) != js:
            raise ValueError("stale")
    except (OSError, EOFError, ValueError):  # absent, unreadable or not this bundle: compress it again
        packed = gzip.compress(js, 6, mtime=0)
        with contextlib.suppress(OSError, MclError):  # a cache that cannot be written only costs the time
            with atomic_path(kept) as tmp:
                tmp.write_bytes(packed)
    return base64.b64encode(packed).decode("ascii")


def _embedded(directory: Path) -> str:
    """plotly.js gzip+base64 in the page, unpacked by the browser, then run as a script."""
    return ('<script type="application/gzip;base64" id="mcl-plotly-gz">' + _plotly_js_gzip_base64() + "</script>\n"
            "<script>const ready = (async () => {\n"
            '  const packed = document.getElementById("mcl-plotly-gz").textContent;\n'
            "  const bytes = Uint8Array.from(atob(packed), ch => ch.charCodeAt(0));\n"
            '  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));\n'
            '  const run = document.createElement("script");\n'
            "  run.textContent = await new Response(stream).text();\n"
            "  document.head.appendChild(run);\n"
            "})();</script>")


def _plain(directory: Path) -> str:
    """plotly.js as written by plotly, in the page."""
    return f"<script>{_plotly_js()}</script>\n<script>const ready = Promise.resolve();</script>"


def _directory(directory: Path) -> str:
    """One `plotly.min.js` beside the page (written once), loaded by a relative path."""
    dest = directory / PLOTLY_JS
    if not dest.is_file():
        write_text_atomic(dest, _plotly_js())
    return f'<script src="{PLOTLY_JS}"></script>\n<script>const ready = Promise.resolve();</script>'


PLOTLY_JS_MODES: dict[str, Callable[[Path], str]] = {"embedded": _embedded, "plain": _plain, "directory": _directory}


def figure_block(fig: Any) -> str:
    """A plotly figure as a JSON block that the page's script draws in its place."""
    text = fig.to_json().replace("<", "\\u003c")  # no "</script>" or "<!--" can end or bend the block
    return '<script type="application/json" class="mcl-figure">' + text + "</script>"


def check_plotlyjs(plotlyjs: str) -> str:
    """`plotlyjs` if it names a mode of PLOTLY_JS_MODES, else a one-line MclError."""
    if plotlyjs not in PLOTLY_JS_MODES:
        raise MclError(f"unknown plotlyjs mode {plotlyjs!r}; choose from {', '.join(PLOTLY_JS_MODES)}")
    return plotlyjs


def page(title: str, body: list[str], directory: str | os.PathLike = ".", plotlyjs: str = "embedded") -> str:
    """A whole HTML page: `body` (HTML fragments, figure blocks), plotly.js as `plotlyjs` says, the drawing script."""
    check_plotlyjs(plotlyjs)
    head = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head><body>")
    return "\n".join([head, *body, PLOTLY_JS_MODES[plotlyjs](Path(directory)), DRAW, "</body></html>"])


def write_figure_html(fig: Any, dest: str | os.PathLike, plotlyjs: str = "embedded") -> None:
    """Write one plotly figure as a page atomically (titled by the figure's title)."""
    title = fig.layout.title.text or Path(dest).stem
    write_text_atomic(dest, page(title, [figure_block(fig)], Path(dest).parent, plotlyjs))
