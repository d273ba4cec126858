"""Analysis spread over processes: under torchrun (2 CPU processes, gloo) mcl-barrier, barrier-matrix, plane and
eval split their work and write one result equal to one process's; a barrier matrix scores each checkpoint once."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mcl.analysis import barrier_matrix, evaluators, sweep
from mcl.cli.main import main as mcl_main
from mcl.adapters import read_adapter
from mcl.paths import Linear

from test_barrier_cli import setting, write_adapter  # noqa: F401  (module fixture: tiny base, two tasks, two adapters)

ROOT = Path(__file__).resolve().parents[1]
sweep_module = importlib.import_module("mcl.analysis.sweep")  # the module, not the function of that name


def _commands(setting, out: Path) -> list[list[str]]:  # noqa: F811
    """The four commands, small: 3 points, a 3x3 plane, 5 examples per task, generation on in barrier and eval."""
    # (the sweep cache is filled by a second barrier; a one-task matrix has a unit too few to go round)
    a, b, c, tasks = setting["a"], setting["b"], setting["c"], setting["tasks"]
    sweep_flags = ["--tasks", *tasks, "--limit", "5", "--quiet"]
    return [
        ["barrier", a, b, "--points", "3", "--metric", "--no-cache", *sweep_flags, "--out", str(out / "barrier")],
        ["barrier-matrix", a, b, c, "--points", "3", "--no-cache", *sweep_flags, "--out", str(out / "matrix")],
        ["plane", a, b, c, "--grid", "3", "--no-cache", *sweep_flags, "--out", str(out / "plane")],
        ["eval", "--model", setting["base"], "--adapter", a, *sweep_flags, "--out", str(out / "eval.json")],
        ["barrier", a, b, "--points", "3", *sweep_flags, "--out", str(out / "cached")],  # fills the sweep cache
        # one task: pair (1, 2) has a single unit (its midpoint), so the 2 processes split its examples
        ["barrier-matrix", a, b, c, "--points", "3", "--metric", "--no-cache", "--tasks", tasks[0], "--limit", "5",
         "--quiet", "--out", str(out / "matrix1")],
    ]


def _counting(monkeypatch, counts: dict) -> None:
    """Count (point, task) scores of the sweeps and examples scored by eval (the real functions still run)."""
    from mcl.eval.evaluate import TaskEvaluator

    score, parts = sweep_module._score, TaskEvaluator.example_parts

    def counted_score(*args, **kwargs):
        counts["points"] = counts.get("points", 0) + 1
        return score(*args, **kwargs)

    def counted_parts(self, *args, **kwargs):
        counts["examples"] = counts.get("examples", 0) + len(self.shard_index)
        return parts(self, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "_score", counted_score)
    monkeypatch.setattr(TaskEvaluator, "example_parts", counted_parts)


def _close(x, y, where: str = "") -> None:
    """Equal JSON values, numbers to 1e-6."""
    if isinstance(x, float) or isinstance(y, float):
        assert x == pytest.approx(y, abs=1e-6, rel=0), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _close(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), where
        for k, (u, v) in enumerate(zip(x, y)):
            _close(u, v, f"{where}[{k}]")
    else:
        assert x == y, where


@pytest.fixture(scope="module")
def runs(setting, tmp_path_factory):  # noqa: F811
    """The commands run by torchrun on 2 processes (retried once: a first gloo start was seen to abort) and by one."""
    root = tmp_path_factory.mktemp("distributed")
    setting["c"] = write_adapter(root / "c", setting["make_base"](), 3)
    spec = root / "commands.json"
    spec.write_text(json.dumps(_commands(setting, root / "two")))
    helper = ROOT / "tests" / "torchrun_analysis.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(helper), str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MCL_CACHE": str(root / "cache"),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    for _ in range(2):  # DESIGN.md §9: one of 11 first torchrun runs aborted once
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCL_CACHE", str(root / "cache"))
        _counting(mp, counts)
        for argv in _commands(setting, root / "one"):
            assert mcl_main(argv) == 0
    return {"one": root / "one", "two": root / "two", "proc": proc, "counts": counts}


@pytest.mark.slow  # one torchrun launch of 2 processes running six commands: seconds alone, 30 s on a busy machine
@pytest.mark.parametrize("files", [("barrier", ["barrier.json", "path.csv"]),
                                   ("matrix", ["barrier_matrix.json", "barriers.csv", "curves.csv"]),
                                   ("plane", ["plane.json", "plane.csv"]),
                                   ("", ["eval.json", "eval-predictions/eval-first.jsonl",
                                         "eval-predictions/eval-last.jsonl"]),
                                   ("matrix1", ["barrier_matrix.json", "barriers.csv", "curves.csv"])],
                         ids=["barrier", "barrier-matrix", "plane", "eval", "matrix-split-examples"])
def test_two_processes_write_one_result_equal_to_one_process(runs, files):
    folder, names = files
    for name in names:
        one, two = runs["one"] / folder / name, runs["two"] / folder / name
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(pd.read_csv(two), pd.read_csv(one), check_exact=False, rtol=0, atol=1e-6)
        elif name.endswith(".jsonl"):
            _close(*([json.loads(x) for x in f.read_text().splitlines()] for f in (two, one)))
        else:
            _close(json.loads(two.read_text()), json.loads(one.read_text()), name)


@pytest.mark.slow
def test_two_processes_share_the_work_and_only_the_main_one_writes(runs):
    out = runs["proc"].stdout
    # one process: barrier 3 points x 2 tasks, matrix 3 checkpoints + 3 midpoints x 2 tasks, plane 9 points x 2 tasks,
    # the cached barrier 0 (the two processes scored its points), the one-task matrix 6; eval 2 tasks x 5 examples
    assert runs["counts"] == {"points": 6 + 12 + 18 + 0 + 6, "examples": 10}
    # round robin over (point, task) units per call: barrier 3|3, matrix pairs 3|3 2|2 1|1, plane 9|9, cached 3|3,
    # one-task matrix pairs 2|1 1|1, and its last pair's single unit by examples 3|2 (eval: 3+3|2+2 examples)
    assert "rank 0 scored 24 points and 9 examples" in out and "rank 1 scored 23 points and 6 examples" in out
    for wrote, n in (("barrier.json", 2), ("barrier_matrix.json", 2), ("plane.json", 1)):
        assert out.count(f"/{wrote}") == n, out  # by the main process alone, once per command that writes it
    assert out.count("task             n") == 1  # eval's table, printed once
    cached = pd.read_csv(runs["one"] / "cached" / "path.csv")
    assert cached["cached"].all()  # the two processes' cache records are the one process's hits
    assert "rank 0 ended with: process 1 of 2 failed: rank 1 cannot go on" in out
    assert "rank 1 ended with: rank 1 cannot go on" in out


def test_a_barrier_matrix_scores_each_checkpoint_once(setting, tmp_path, monkeypatch):  # noqa: F811
    from mcl.models import load_base

    c = write_adapter(tmp_path / "c", setting["make_base"](), 3)
    states = [read_adapter(d) for d in (setting["a"], setting["b"], c)]
    model, tok = load_base(setting["base"])
    tasks = evaluators(tok, setting["tasks"], limit=4)
    counts: dict = {}
    _counting(monkeypatch, counts)
    bm = barrier_matrix(states, model, tasks, 4, cache=False, progress=False)
    assert counts["points"] == bm.evaluations == (3 + 3 * 2) * 2  # 3 checkpoints once + 2 inner points per pair
    for (i, j), curve in bm.curves.groupby(["i", "j"]):
        alone = sweep(Linear(states[i], states[j]), model, tasks, 4, cache=False, progress=False)
        pd.testing.assert_frame_equal(curve[alone.columns.drop("cached")].reset_index(drop=True),
                                      alone.drop(columns="cached"), check_exact=False, rtol=0, atol=1e-6)
        shared = {(0, 1): [], (0, 2): [0.0], (1, 2): [0.0, 1.0]}[(i, j)]  # endpoints scored by an earlier pair
        assert sorted(set(curve[curve.cached].t)) == shared


def test_the_launchers_environment_names_this_process_and_its_share(monkeypatch):
    from mcl.analysis.distributed import Ranks, launched, rank_device
    from mcl.errors import MclError

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched() == Ranks(0, 1, 0) and launched().main and list(launched().share(3)) == [0, 1, 2]
    assert rank_device("cuda") == "cuda"  # one process: the device as asked
    monkeypatch.setenv("RANK", "3")
    assert launched() == Ranks(0, 1, 0)  # a stray RANK without a world of several processes changes nothing
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    here = launched()
    assert here == Ranks(1, 3, 1) and not here.main and list(here.share(8)) == [1, 4, 7]
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)  # no GPU here: the count a 4-GPU node reports
    assert rank_device("cuda") == "cuda:1" and rank_device("cuda:0") == "cuda:0" and rank_device("cpu") == "cpu"
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)  # a launcher that shows each process one GPU
    assert rank_device("cuda") == "cuda:0"
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(MclError, match="RANK=3 and WORLD_SIZE=3"):
        launched()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(MclError, match="RANK='one' is not an integer"):
        launched()
