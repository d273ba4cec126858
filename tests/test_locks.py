"""One writer per output and one invocation per dir: the lock module, staged outputs, and real concurrent
writers (separate processes) on one dir.

The process tests pause the first writer (SIGSTOP) once it holds its lock, so the second one meets a live
holder every time, then let it finish (SIGCONT) or kill it (-9) to leave a stale lock behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mcl.errors import MclError
from mcl.io import staged_outputs
from mcl.lock import OutputLock, lock_file_for
from test_barrier_cli import setting, write_adapter  # noqa: F401  (module fixture: tiny base, two tasks, two adapters)

ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    with OutputLock(out, "--out out"):
        record = json.loads(lock_file_for(out).read_text())
        assert record["pid"] == os.getpid() and record["host"] == HOST
        with pytest.raises(MclError, match=rf"^--out out is in use by pid {os.getpid()} on host {HOST} \(since "):
            OutputLock(out, "--out out").acquire()
    assert not lock_file_for(out).exists()  # released: nothing left behind
    with OutputLock(out):
        pass


def test_a_dead_writers_lock_is_taken_over_with_a_line(tmp_path, capsys):
    p = subprocess.Popen(["true"])
    p.wait()
    lock_file_for(tmp_path / "out").write_text(json.dumps({"pid": p.pid, "host": HOST, "since": "then"}))
    with OutputLock(tmp_path / "out", "--out out"):
        assert json.loads(lock_file_for(tmp_path / "out").read_text())["pid"] == os.getpid()
    assert capsys.readouterr().err == (f"mcl: took over the lock of --out out left by pid {p.pid} on host {HOST} "
                                       "(that process is gone)\n")


def test_another_hosts_lock_is_not_taken_over(tmp_path):
    lock = lock_file_for(tmp_path / "out")
    lock.write_text(json.dumps({"pid": 7, "host": "elsewhere"}))
    with pytest.raises(MclError, match=f"written on host elsewhere by pid 7 \\({lock}\\)"):
        OutputLock(tmp_path / "out").acquire()
    assert json.loads(lock.read_text()) == {"pid": 7, "host": "elsewhere"}  # left as it was


def test_dirs_the_lock_made_go_when_nothing_else_filled_them(tmp_path):
    with OutputLock(tmp_path / "a" / "b" / "out"):
        assert (tmp_path / "a" / "b").is_dir()
    assert not (tmp_path / "a").exists()
    with OutputLock(tmp_path / "a" / "b" / "out"):
        (tmp_path / "a" / "b" / "out").mkdir()
    assert (tmp_path / "a" / "b" / "out").is_dir() and not lock_file_for(tmp_path / "a" / "b" / "out").exists()


def test_staged_outputs_swap_in_one_invocation_and_keep_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("done.json", "a.csv", "stale.csv", "mine.txt"):
        (out / name).write_text("old")
    (out / ".mcl-staging.killed").mkdir()  # a staging dir of an invocation killed before its swap
    with staged_outputs(out, "done.json", ("done.json", "a.csv", "stale.csv")) as stage:
        (stage / "a.csv").write_text("new")
        (stage / "done.json").write_text("new")
        assert (out / "done.json").read_text() == "old" and (out / "stale.csv").exists()  # nothing swapped yet
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "done.json", "mine.txt"]
    assert [(out / n).read_text() for n in ("a.csv", "done.json", "mine.txt")] == ["new", "new", "old"]
    with pytest.raises(OSError):
        with staged_outputs(out, "done.json", ("done.json", "a.csv")) as stage:
            (stage / "a.csv").write_text("newer")
            raise OSError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "done.json", "mine.txt"]  # a failure changes nothing
    assert (out / "a.csv").read_text() == "new"
    with pytest.raises(OSError):
        with staged_outputs(tmp_path / "new", "done.json", ()):
            raise OSError("disk full")
    assert not (tmp_path / "new").exists()  # a dir made for outputs that never came is gone


# --- real concurrent writers ---------------------------------------------------------------------------------------
def start(module: str, *args: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MCL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lock(proc: subprocess.Popen, lock: Path, timeout: float = 120) -> None:
    """Until `proc` holds `lock` (its pid recorded there); then pause it."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads(lock.read_text()).get("pid") == proc.pid:
                proc.send_signal(signal.SIGSTOP)
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{lock} never named pid {proc.pid}")


@pytest.mark.slow
def test_two_sweeps_on_one_out_dir_one_writes_one_consistent_result(setting, tmp_path):  # noqa: F811
    c = write_adapter(tmp_path / "c", setting["make_base"](), seed=3)
    out = tmp_path / "out"
    common = ["--data", setting["tasks"][0], "--points", "3", "--limit", "4", "--quiet", "--out", str(out)]
    first = start("mcl.cli.barrier_cmd", setting["a"], setting["b"], *common, cache=tmp_path / "cache")
    wait_for_lock(first, lock_file_for(out))
    second = start("mcl.cli.barrier_cmd", setting["a"], c, *common, cache=tmp_path / "cache")
    _, err = second.communicate(timeout=300)
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.communicate()
    assert second.returncode == 2
    assert err.startswith(f"mcl-barrier: error: --out {out} is in use by pid {first.pid} on host {HOST} (since ")
    assert len(err.strip().splitlines()) == 1
    result = json.loads((out / "barrier.json").read_text())
    frame = pd.read_csv(out / "path.csv").sort_values("t")
    assert result["b"] == setting["b"] and result["tasks"]["first"]["loss"] == frame["loss"].tolist()
    assert sorted(p.name for p in out.iterdir()) == ["barrier.json", "path.csv", "path.html", "path.png"]
    assert not lock_file_for(out).exists()


@pytest.mark.slow
def test_two_trainings_on_one_run_dir_then_a_killed_holder_is_taken_over(setting, tmp_path):  # noqa: F811
    cfg = {"name": "r", "model": setting["base"], "tasks": setting["tasks"], "method": "seq",
           "runs_dir": str(tmp_path / "runs"),
           "train": {"steps_per_task": 3, "batch_size": 2, "warmup": 1, "log_every": 1},
           "eval": {"max_examples": 2, "generate": False}, "lora": {"r": 2, "target_modules": ["q_proj"]}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    train = ["mcl.cli.main", "train", str(tmp_path / "cfg.yaml"), "--quiet"]
    first = start(*train, cache=tmp_path / "cache")
    runs = tmp_path / "runs"
    end = time.time() + 120
    while not list(runs.glob(".*.lock")) and time.time() < end:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    lock = next(runs.glob(".*.lock"))
    wait_for_lock(first, lock)
    second = start(*train, cache=tmp_path / "cache")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2 and len(err.strip().splitlines()) == 1
    assert f"mcl: error: run dir {runs / lock.name[1:-5]} is in use by pid {first.pid} on host {HOST}" in err
    first.kill()  # kill -9 while it holds the run dir: its lock file stays, its flock goes with it
    first.wait()
    assert json.loads(lock.read_text())["pid"] == first.pid
    third = start(*train, cache=tmp_path / "cache")
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    assert f"took over the lock of run dir {runs / lock.name[1:-5]} left by pid {first.pid} on host {HOST}" in err
    run_dir = runs / lock.name[1:-5]
    log = pd.read_csv(run_dir / "metrics" / "train_log.csv")
    assert list(zip(log.phase, log.step)) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]  # each step once
    assert (run_dir / "metrics" / "summary.json").is_file() and not lock.exists()


@pytest.mark.slow
def test_under_torchrun_every_rank_stops_on_a_held_run_dir(setting, tmp_path):  # noqa: F811
    """Rank 0 meets the holder; rank 1 gets the same one-line error through a broadcast instead of waiting forever."""
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir

    cfg = {"model": setting["base"], "tasks": setting["tasks"], "method": "seq", "runs_dir": str(tmp_path / "runs"),
           "train": {"steps_per_task": 2, "batch_size": 2, "warmup": 1}, "lora": {"r": 2, "target_modules": ["q_proj"]}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = resolve_run_dir(load_config(tmp_path / "cfg.yaml"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mcl.cli.main",
           "train", str(tmp_path / "cfg.yaml"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with OutputLock(run_dir, f"run dir {run_dir}"):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    errors = [line for line in proc.stderr.splitlines() if "mcl: error:" in line]
    assert proc.returncode != 0 and len(errors) == 2, proc.stderr[-3000:]
    assert all(f"run dir {run_dir} is in use by pid {os.getpid()} on host {HOST}" in e for e in errors)
    assert not run_dir.exists()
