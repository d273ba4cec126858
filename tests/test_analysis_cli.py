"""`mcl curve fit` → `mcl-barrier --controls`, `mcl plane`, `mcl barrier-matrix RUN_DIR` end to end on a tiny model."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM

from mcl.analysis import evaluators
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


def _flat_delta(adapter_dir: str) -> torch.Tensor:
    """All modules' ΔW = (α/r)·B·A of a plain-peft dir (LORA: α/r = 2), flattened in key order, float64."""
    t = load_file(f"{adapter_dir}/adapter_model.safetensors")
    a_keys = sorted(k for k in t if ".lora_A." in k)
    return torch.cat([(2.0 * t[k.replace("lora_A", "lora_B")].double() @ t[k].double()).flatten() for k in a_keys])


def test_plane_command_puts_grid_anchors_and_curve_at_their_delta_space_coordinates(setting, tmp_path):  # noqa: F811
    c = write_adapter(tmp_path / "c", setting["make_base"](), seed=3)
    out = tmp_path / "plane"
    assert main(["plane", setting["a"], setting["b"], c, "--data", setting["tasks"][0], "--grid", "3", "--draw",
                 "bezier", "--space", "delta", "--quiet", "--no-cache", "--out", str(out)]) == 0
    info = json.loads((out / "plane.json").read_text())
    assert info["space"] == "delta" and len(info["curve"]["t"]) == 101
    da, db, dc = (_flat_delta(d) for d in (setting["a"], setting["b"], c))
    u_hat = (db - da) / (db - da).norm()
    v = dc - da - ((dc - da) @ u_hat) * u_hat
    v_hat = v / v.norm()
    want = {"a": [0.0, 0.0], "b": [(db - da).norm().item(), 0.0], "c": [((dc - da) @ u_hat).item(), v.norm().item()]}
    for name, xy in want.items():
        assert info["anchors"][name] == pytest.approx(xy, rel=1e-6, abs=1e-9)
    grid = pd.read_csv(out / "plane.csv")
    assert len(grid) == 9
    for row in grid.itertuples():  # each grid point: a + x·û + y·v̂, built from its affine weights of a, b, c
        point = row.w_a * da + row.w_b * db + row.w_c * dc
        torch.testing.assert_close(point, da + row.x * u_hat + row.y * v_hat, rtol=1e-6, atol=1e-9)
    curve = pd.DataFrame(info["curve"])  # Bézier a → c → b: (1−t)²·a + 2t(1−t)·c + t²·b in the plane
    anchors = np.array([want[n] for n in "acb"])
    for t, x, y in curve.iloc[::25][["t", "x", "y"]].itertuples(index=False):
        assert [x, y] == pytest.approx(list(np.array([(1 - t) ** 2, 2 * t * (1 - t), t**2]) @ anchors), abs=1e-9)
    corner = grid.iloc[0]  # the grid's first point, off the triangle: scored as W0 + its ΔW merged by hand
    model = LlamaForCausalLM.from_pretrained(setting["base"])
    deltas = {n: PeftModel.from_pretrained(setting["make_base"](), d).merge_and_unload().state_dict()
              for n, d in zip("abc", (setting["a"], setting["b"], c))}
    w0 = model.state_dict()
    model.load_state_dict({k: w0[k] + sum(corner[f"w_{n}"] * (deltas[n][k] - w0[k]) for n in "abc") for k in w0})
    task = evaluators(AutoTokenizer.from_pretrained(setting["base"]), [setting["tasks"][0]])[0]
    assert task.evaluate(model.eval(), generate=False)["loss"] == pytest.approx(corner.loss, rel=1e-5)
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
