"""Every HTML file mcl writes is self-contained (no network, no file beside it); figures read right.

The HTML of `mcl-barrier`, `mcl plane`, `mcl barrier-matrix` and `mcl report` on tiny runs is parsed:
nothing is loaded from a URL or a neighbouring file, the embedded plotly.js unpacks to plotly's own
bundle, and a path.html copied alone keeps its figure. With chromium installed, a slow test draws the
copied page in it. The barrier-matrix scale and the plane's colour bars are checked on synthetic data.
"""

import base64
import gzip
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from mcl.analysis.matrix import BarrierMatrix
from mcl.analysis.plane import Plane
from mcl.analysis.plots import barrier_scale, plot_barrier_matrix, plot_path, plot_plane
from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main
from mcl.errors import MclError
import mcl.html as mcl_html
from mcl.html import PLOTLY_JS, figure_block, page
from test_barrier_cli import setting  # noqa: F401  (module fixture: tiny base dir, two tasks, two plain-peft adapters)
from test_barrier_cli import write_adapter
from test_report import _run as finished_run

NETWORK = re.compile(r"(https?:)?//[\w.-]+\.\w+", re.I)


class Page(HTMLParser):
    """The references (src, href, …) and scripts of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.refs, self.scripts, self._script = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "data", "srcset", "poster") and v]
        if tag == "script":
            self._script = [dict(attrs), ""]
            self.scripts.append(self._script)

    def handle_data(self, data):
        if self._script is not None:
            self._script[1] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def figures(self) -> list[dict]:
        return [json.loads(text) for attrs, text in self.scripts if attrs.get("class") == "mcl-figure"]

    def plotly_js(self) -> str:
        packed = [text for attrs, text in self.scripts if attrs.get("type") == "application/gzip;base64"]
        assert len(packed) == 1  # plotly.js once per page
        return gzip.decompress(base64.b64decode(packed[0])).decode()


def assert_standalone(path: Path) -> Page:
    """No reference to anything outside the page, no network URL anywhere, plotly.js inside it."""
    text = path.read_text()
    parsed = Page(text)
    assert parsed.refs == [], f"{path.name} loads {parsed.refs}"
    outside_bundle = re.sub(r'(<script type="application/gzip;base64"[^>]*>)[^<]*', r"\1", text)
    assert NETWORK.search(outside_bundle) is None, f"{path.name}: {NETWORK.search(outside_bundle)}"
    assert parsed.plotly_js() == get_plotlyjs()
    return parsed


def test_every_html_mcl_writes_is_self_contained(setting, tmp_path):  # noqa: F811
    a, b, tasks = setting["a"], setting["b"], setting["tasks"][:1]
    c = write_adapter(tmp_path / "c", setting["make_base"](), seed=3)
    common = ["--data", *tasks, "--points", "3", "--quiet", "--no-cache"]
    for out in ("barrier", "plane", "matrix"):  # the shared bundle an earlier version wrote goes with its pages
        (tmp_path / out).mkdir()
        (tmp_path / out / PLOTLY_JS).write_text("// plotly.js")
    assert barrier_main([a, b, *common, "--out", str(tmp_path / "barrier")]) == 0
    assert main(["plane", a, b, c, "--data", *tasks, "--grid", "2", "--quiet", "--no-cache",
                 "--out", str(tmp_path / "plane")]) == 0
    assert main(["barrier-matrix", a, b, c, *common, "--out", str(tmp_path / "matrix")]) == 0
    assert main(["report", finished_run(tmp_path / "runs", "s0"), "--out", str(tmp_path / "report")]) == 0
    pages = sorted(tmp_path.rglob("*.html"))
    assert [p.relative_to(tmp_path).as_posix() for p in pages] == [
        "barrier/path.html", "matrix/barrier_matrix.html", "plane/plane.html", "report/report.html"]
    assert not list(tmp_path.rglob(PLOTLY_JS))
    figures = {p.parent.name: assert_standalone(p).figures() for p in pages}
    assert [len(f) for f in figures.values()] == [1, 1, 1, 1]
    assert [t["name"] for t in figures["matrix"][0]["data"]] == ["first"]
    assert figures["report"][0]["data"][0]["type"] == "heatmap"


def test_a_copied_path_html_keeps_its_figure(setting, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert barrier_main([setting["a"], setting["b"], "--data", *setting["tasks"], "--points", "3", "--quiet",
                         "--no-cache", "--out", str(out)]) == 0
    alone = tmp_path / "elsewhere" / "path.html"
    alone.parent.mkdir()
    shutil.copy(out / "path.html", alone)
    (fig,) = assert_standalone(alone).figures()
    assert [t["name"] for t in fig["data"]] == ["first", "last"]
    assert 1.8e6 < alone.stat().st_size < 2.1e6  # plotly.js gzip-compressed: 2.0 MB, not 4.8 MB


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium here (apt-get install chromium)")
def test_a_copied_path_html_draws_in_a_headless_browser(setting, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert barrier_main([setting["a"], setting["b"], "--data", *setting["tasks"], "--points", "3", "--quiet",
                         "--no-cache", "--out", str(out)]) == 0
    alone = tmp_path / "elsewhere" / "path.html"
    alone.parent.mkdir()
    shutil.copy(out / "path.html", alone)
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", alone.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 2  # plotly unpacked itself and drew the figure
    assert dom.count('class="legendtext"') == 2


def test_the_other_plotly_modes_and_a_wrong_one(tmp_path):
    shared = page("t", ["<p>x</p>"], tmp_path, plotlyjs="directory")
    assert Page(shared).refs == [("script", "src", PLOTLY_JS)] and (tmp_path / PLOTLY_JS).read_text() == get_plotlyjs()
    assert get_plotlyjs() in page("t", [], tmp_path, plotlyjs="plain")
    with pytest.raises(MclError, match="unknown plotlyjs mode 'cdn'; choose from embedded, plain, directory"):
        page("t", [], tmp_path, plotlyjs="cdn")
    frame = pd.DataFrame({"t": [0.0, 1.0], "task": "x", "loss": [1.0, 2.0], "metric": np.nan, "metric_name": None})
    with pytest.raises(MclError, match="unknown plotlyjs mode 'cdn'"):
        plot_path(frame, tmp_path / "p.png", tmp_path / "p.html", plotlyjs="cdn")
    assert not (tmp_path / "p.png").exists()  # refused before anything is written


def test_the_compressed_bundle_is_kept_and_a_bad_copy_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache"))
    mcl_html._plotly_js_gzip_base64.cache_clear()
    first = page("t", [], tmp_path)
    (kept,) = (tmp_path / "cache" / "plotly").glob("plotly-*.min.js.gz")
    assert gzip.decompress(kept.read_bytes()) == get_plotlyjs().encode()
    kept.write_bytes(gzip.compress(b"not plotly"))  # stale or tampered: not this bundle
    mcl_html._plotly_js_gzip_base64.cache_clear()
    dest = tmp_path / "p.html"
    dest.write_text(page("t", [figure_block(go.Figure(go.Scatter(x=[0, 1], y=[1, 2])))], tmp_path))
    assert assert_standalone(dest).figures()[0]["data"][0]["type"] == "scatter"
    assert gzip.decompress(kept.read_bytes()) == get_plotlyjs().encode()
    mcl_html._plotly_js_gzip_base64.cache_clear()
    assert page("t", [], tmp_path) == first  # read back from the kept copy: the same page
    mcl_html._plotly_js_gzip_base64.cache_clear()


def _matrix(values: dict[str, float]) -> BarrierMatrix:
    """Two checkpoints, one barrier per task."""
    rows = [{"task": t, "measure": "loss", "i": 0, "j": 1, "max_minus_linear": v, "max_minus_mean": v,
             "integral": v, "argmax_t": 0.5} for t, v in values.items()]
    return BarrierMatrix(["x", "y"], pd.DataFrame(rows), pd.DataFrame())


def test_a_zero_barrier_panel_is_drawn_as_zero_on_one_scale(tmp_path):
    fig = plot_barrier_matrix(_matrix({"flat": 0.0, "high": 0.8, "low": 0.2}), tmp_path / "m.png", tmp_path / "m.html")
    norms = [ax.images[0].norm for ax in fig.axes if ax.images]
    assert [(n.vmin, n.vmax) for n in norms] == [(0.0, 0.8)] * 3  # shared, from 0
    flat = fig.axes[0].images[0]
    assert np.allclose(flat.to_rgba(flat.get_array()), flat.cmap(0.0))  # every cell of the zero panel: the 0 colour
    assert [t.get_color() for t in fig.axes[0].texts] == ["black"] * 4
    (spec,) = Page((tmp_path / "m.html").read_text()).figures()
    assert (spec["layout"]["coloraxis"]["cmin"], spec["layout"]["coloraxis"]["cmax"]) == (0.0, 0.8)
    assert {t["coloraxis"] for t in spec["data"]} == {"coloraxis"}


@pytest.mark.parametrize("values,cmap,limits", [
    ({"a": 0.0, "b": 0.0}, "magma_r", (0.0, 1.0)),  # all zero: 0 is the lightest colour, not the middle
    ({"a": 0.0, "b": 0.3}, "magma_r", (0.0, 0.3)),
    ({"a": -0.5, "b": 0.2}, "RdBu_r", (-0.5, 0.5)),  # negative barriers: diverging, 0 in the middle (white)
])
def test_barrier_scale(values, cmap, limits):
    got_cmap, norm = barrier_scale({t: _matrix(values).matrix(t) for t in values})
    assert got_cmap.name == cmap and (norm.vmin, norm.vmax) == pytest.approx(limits)


def test_plane_panels_fill_their_cells_with_colour_bars_as_tall_as_them(tmp_path):
    xs, ys = np.linspace(-1.6, 9.8, 5), np.linspace(-0.2, 1.4, 5)  # a long, flat plane (as I-LoRA's often is)
    frame = pd.DataFrame([{"x": x, "y": y, "task": t, "loss": s * (x + y)} for t, s in (("p", 1), ("q", 3))
                          for x in xs for y in ys])
    fig = plot_plane(Plane(frame, {"a": (0, 0), "b": (8.2, 0), "c": (8.1, 0.2)}, None, "factors"), tmp_path / "p.png")
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    panels, bars = fig.axes[0::2], fig.axes[1::2]
    for ax, bar in zip(panels, bars):
        assert ax.get_aspect() == "auto"
        box, bar_box = ax.get_position(), bar.get_position()
        assert (box.height * height) / (box.width * width) == pytest.approx(0.8, abs=0.15)  # not squashed flat
        assert bar_box.height == pytest.approx(box.height, rel=0.02) and bar_box.width < 0.1 * box.width
        assert bar.get_ylabel() == "loss"


def test_a_task_name_cannot_end_the_figure_block(tmp_path):
    name = "</script><script>alert(1)</script><!--"
    frame = pd.DataFrame({"t": [0.0, 1.0], "task": name, "loss": [1.0, 2.0], "metric": np.nan, "metric_name": None})
    plot_path(frame, html=tmp_path / "path.html", title=name)
    parsed = assert_standalone(tmp_path / "path.html")
    assert [t["name"] for t in parsed.figures()[0]["data"]] == [name]
    assert [attrs.get("class") or attrs.get("type") for attrs, _ in parsed.scripts] == [
        "mcl-figure", "application/gzip;base64", None, None]  # the figure, plotly.js, its unpacker, the drawing
