"""`mcl curve fit` → `mcl-barrier --controls`, `mcl plane`, `mcl barrier-matrix RUN_DIR` end to end on a tiny model."""

import json
import shutil

import pandas as pd
import yaml

from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main
from test_barrier_cli import setting  # noqa: F401  (module fixture: tiny base dir, two tasks, two plain-peft adapters)
from test_barrier_cli import write_adapter


def test_curve_fit_then_barrier_along_the_curve(setting, tmp_path, capsys):  # noqa: F811
    curve = tmp_path / "curve"
    args = ["curve", "fit", setting["a"], setting["b"], "--data", *setting["tasks"], "--steps", "4",
            "--checkpoint-every", "2", "--lr", "1e-2", "--out", str(curve), "--quiet"]
    assert main(args) == 0
    info = json.loads((curve / "curve.json").read_text())
    assert info["path"] == "bezier" and info["controls"] == ["control-1"] and len(info["history"]) == 4
    assert (curve / "control-1" / "adapter_config.json").is_file()
    assert main(args) == 0  # finished fit: resumes at step 4, nothing to do
    assert "in 4 steps" in capsys.readouterr().out
    out = tmp_path / "out"
    assert barrier_main([setting["a"], setting["b"], "--controls", str(curve), "--data", setting["tasks"][0],
                         "--points", "3", "--quiet", "--no-cache", "--out", str(out)]) == 0
    result = json.loads((out / "barrier.json").read_text())
    assert result["path"] == "bezier" and result["space"] == "factors" and len(result["controls"]) == 1


def test_plane_command_writes_grid_and_figures(setting, tmp_path):  # noqa: F811
    c = write_adapter(tmp_path / "c", setting["make_base"](), seed=3)
    out = tmp_path / "plane"
    assert main(["plane", setting["a"], setting["b"], c, "--data", setting["tasks"][0], "--grid", "3", "--draw", "bezier",
                 "--space", "delta", "--quiet", "--no-cache", "--out", str(out)]) == 0
    info = json.loads((out / "plane.json").read_text())
    assert info["space"] == "delta" and set(info["anchors"]) == {"a", "b", "c"} and len(info["curve"]["t"]) == 101
    assert len(pd.read_csv(out / "plane.csv")) == 9
    assert (out / "plane.png").stat().st_size > 1000 and (out / "plane.html").stat().st_size > 1000


def test_barrier_matrix_over_a_run_dir(setting, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    (run / "tasks").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"tasks": setting["tasks"]}))
    shutil.copytree(setting["a"], run / "tasks" / "0-first")
    shutil.copytree(setting["b"], run / "tasks" / "1-last")
    for learner, src in (("fast", setting["a"]), ("slow", setting["b"])):  # an I-LoRA style task dir
        shutil.copytree(src, run / "tasks" / "2-again" / learner)
    assert main(["barrier-matrix", str(run), "--points", "3", "--quiet", "--no-cache"]) == 0
    out = run / "analysis" / "barrier-matrix"
    info = json.loads((out / "barrier_matrix.json").read_text())
    assert info["labels"] == ["0-first", "1-last", "2-again/slow"]
    barriers = pd.read_csv(out / "barriers.csv")
    assert len(barriers) == 3 * 2 and set(barriers.task) == {"first", "last"}
    same = barriers[(barriers.a == "1-last") & (barriers.b == "2-again/slow")]
    assert (same.max_minus_linear.abs() < 1e-6).all()  # identical adapters: no barrier
    assert (out / "barrier_matrix.png").is_file() and (out / "barrier_matrix.html").is_file()


def test_barrier_matrix_needs_out_for_plain_dirs(setting, tmp_path, capsys):  # noqa: F811
    assert main(["barrier-matrix", setting["a"], setting["b"], "--data", setting["tasks"][0]]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
