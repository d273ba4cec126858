"""Report labels name only settings that change results; a task a run lacks shows "–", not nan."""

import json

import numpy as np
import pandas as pd
import yaml

from mcl.train.config import RunConfig, keys_without_results
from mcl.train.report import group_labels, read_run, report


def _run(root, name, tasks=("first", "last"), **train_or_eval):
    d = root / name
    (d / "metrics").mkdir(parents=True)
    cfg = RunConfig(name=name, tasks=list(tasks))
    for key, value in train_or_eval.items():
        section, field = key.split("__")
        setattr(getattr(cfg, section), field, value)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    R = np.full((len(tasks), len(tasks)), 0.5)
    pd.DataFrame(R, index=list(tasks), columns=list(tasks)).to_csv(d / "metrics" / "R.csv")
    summary = {"tasks": list(tasks), "views": ["main"], "primary_view": "main",
               "score": {"OP": 0.5, "BWT": 0.0, "FWT": 0.0, "forgetting": 0.0}}
    (d / "metrics" / "summary.json").write_text(json.dumps(summary))
    return d


def test_settings_that_change_no_result_stay_out_of_labels(tmp_path):
    assert keys_without_results() == {"name", "runs_dir", "data_seed", "train.checkpoint_every", "train.log_every",
                                      "train.log_with", "eval.batch_size", "train.ignore_memory_check"}
    runs = [_run(tmp_path, "a"), _run(tmp_path, "b", eval__batch_size=7, train__checkpoint_every=3, train__log_every=1),
            _run(tmp_path, "c", train__lr=5e-4)]
    assert group_labels([read_run(r) for r in runs]) == ["seq (train.lr=0.001)"] * 2 + ["seq (train.lr=0.0005)"]


def test_a_task_a_run_lacks_is_a_dash(tmp_path):
    runs = [_run(tmp_path, "two"), _run(tmp_path, "three", tasks=("first", "last", "count"))]
    report(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "nan" not in md and md.count("–") >= 2
