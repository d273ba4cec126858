"""`mcl report` compares like with like: runs grouped by all but the seed, honest cells, fixed scales, offline HTML."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mcl.train.config import RunConfig
from mcl.train.report import aggregate, group_labels, read_run, report, summary_table

TASKS = ["first", "last"]


def _run(root: Path, name: str, method: str = "seq", seed: int = 0, args: dict | None = None,
         tasks: list[str] = TASKS, model: str = "tiny", R: list[list[float]] | None = None, bwt: float = -0.1) -> str:
    """A finished run dir as the trainer leaves it: config.yaml, method.json, metrics/summary.json and R.csv."""
    d = root / name
    (d / "metrics").mkdir(parents=True)
    cfg = RunConfig(name=name, model=model, tasks=list(tasks), method=method)
    cfg.train.seed = seed
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (d / "method.json").write_text(json.dumps({"method": method, "args": args or {}}))
    R = np.array(R if R is not None else [[0.5 + 0.1 * seed, 0.0], [0.3, 0.8]])
    pd.DataFrame(R, index=tasks, columns=tasks).to_csv(d / "metrics" / "R.csv")
    views = ["main"]
    summary = {"tasks": tasks, "views": views, "primary_view": "main",
               "score": {"OP": float(R[-1].mean()), "BWT": bwt, "FWT": 0.0, "forgetting": -bwt}}
    (d / "metrics" / "summary.json").write_text(json.dumps(summary))
    return str(d)


def test_runs_differing_only_by_seed_share_a_group_and_others_do_not(tmp_path):
    dirs = [_run(tmp_path, "a0", seed=0), _run(tmp_path, "a1", seed=1),
            _run(tmp_path, "other-tasks", tasks=["first", "count"]), _run(tmp_path, "other-model", model="m2"),
            _run(tmp_path, "er", method="er", args={"buffer_size": 16})]
    labels = group_labels([read_run(d) for d in dirs])
    assert labels[0] == labels[1]
    assert len(set(labels)) == 4
    assert "model=" in labels[3] and "tasks=" in labels[2] and labels[4].startswith("er")


def test_methods_with_their_default_args_are_labelled_by_name_only(tmp_path):
    dirs = [_run(tmp_path, "seq"), _run(tmp_path, "er", method="er", args={"buffer_size": 200}),
            _run(tmp_path, "ilora", method="ilora", args={"buffer_size": 200, "ema_lambda": 0.9})]
    assert group_labels([read_run(d) for d in dirs]) == ["seq", "er", "ilora"]


def test_resolved_method_args_from_method_json_split_groups(tmp_path):
    dirs = [_run(tmp_path, "er16", method="er", args={"buffer_size": 16}),
            _run(tmp_path, "er32", method="er", args={"buffer_size": 32})]
    labels = group_labels([read_run(d) for d in dirs])
    assert labels == ["er (buffer_size=16)", "er (buffer_size=32)"]


def test_one_seed_has_no_plus_minus_and_nan_is_a_dash(tmp_path):
    dirs = [_run(tmp_path, "s0", seed=0), _run(tmp_path, "s1", seed=1),
            _run(tmp_path, "mtl", method="mtl", bwt=float("nan"))]
    runs = [read_run(d) for d in dirs]
    agg = aggregate(summary_table(runs))
    seq, mtl = agg.loc["seq"], agg.loc["mtl"]
    assert seq["seeds"] == 2 and "±" in seq["first"]
    assert seq["first"].startswith(f"{np.mean([0.3, 0.3]):.3f}") and seq["OP"].startswith(f"{np.mean([0.55, 0.55]):.3f}")
    assert mtl["seeds"] == 1 and "±" not in mtl["OP"] and mtl["BWT"] == "–" and "nan" not in " ".join(mtl.astype(str))


def test_report_writes_one_offline_html_and_fixed_scale_heatmaps(tmp_path):
    dirs = [_run(tmp_path / "runs", "s0"), _run(tmp_path / "runs", "er", method="er", R=[[0.1, 0.0], [0.05, 0.2]])]
    table = report(dirs, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert re.search(r"<script[^>]*src=", html) is None  # nothing loaded from elsewhere (a CDN)
    assert html.count('<script type="application/gzip;base64"') == 1  # plotly.js embedded once for every heatmap
    assert html.count('"zmin":0.0') == 2 and html.count('"zmax":1.0') == 2  # both runs on the same [0, 1] scale
    assert len(list((tmp_path / "out").glob("*.png"))) == 2 and len(table) == 2


@pytest.mark.parametrize("rgba,colour", [((1.0, 1.0, 0.8, 1.0), "black"), ((0.1, 0.0, 0.3, 1.0), "white")])
def test_cell_text_contrasts_with_its_background(rgba, colour):
    from mcl.train.report import _text_colour

    assert _text_colour(rgba) == colour
