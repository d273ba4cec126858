"""The built-in suite: the shipped copy, byte-identical builds per seed, disjoint splits, valid specs, names."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcl.cli.main import main
from mcl.data import SPLITS, SUITE, Sizes, build_suite, load_task, load_tasks
from mcl.data.suite import SHIPPED_DIR, compare_with_shipped, default_suite_dir, pack_suite, verify_suite
from mcl.errors import MclError
from mcl.eval.metrics import METRICS
from mcl.train.config import load_config

# sha256 of the v3 suite's per-file sha256 map, built on Python 3.11.7 (the content the README's results used)
V3_FILES_SHA256 = "52964967c4cf422516c1779e4ef859bdc6f7942df3009c18af23681b806f1de2"

SMALL = Sizes(train=40, eval=12, test=12)


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory):
    return build_suite(tmp_path_factory.mktemp("suite") / "s", seed=3, sizes=SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_builds_byte_identical(small_suite, tmp_path):
    again = build_suite(tmp_path / "again", seed=3, sizes=SMALL)
    assert _files(small_suite) == _files(again)
    other = build_suite(tmp_path / "other", seed=4, sizes=SMALL)
    assert _files(other)["arith/train.json"] != _files(small_suite)["arith/train.json"]


def test_eight_tasks_with_mixed_formats(small_suite):
    tasks = [load_task(small_suite / name) for name in SUITE]
    assert len(tasks) == 8
    metrics = [t.metric for t in tasks]
    assert set(metrics) <= set(METRICS) and {"accuracy", "rouge_l", "edit_similarity", "exact_numeric"} <= set(metrics)
    assert sum(1 for t in tasks if t.spec.labels and t.spec.labels != list("ABCD")) >= 3
    for t in tasks:
        assert [len(t.split(s)) for s in SPLITS] == [40, 12, 12]
        assert 0 <= t.spec.chance < 0.5
        if t.spec.labels:
            assert {e.answer for s in SPLITS for e in t.split(s)} <= set(t.spec.labels)


def test_splits_never_share_a_prompt(small_suite):
    for name in SUITE:
        task = load_task(small_suite / name)
        prompts = [e.prompt for s in SPLITS for e in task.split(s)]
        assert len(prompts) == len(set(prompts)), name


def test_refuses_to_overwrite_a_foreign_dir(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["data", "build", "--out", str(tmp_path / "mine"), "--train", "5", "--eval", "2", "--test", "2"]) == 2
    assert "not an mcl suite dir" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_built_in_names_load_the_shipped_suite_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache"))
    tasks = load_tasks(["mcl-suite"])
    assert [t.name for t in tasks] == list(SUITE) and not (tmp_path / "cache").exists()
    assert all(t.path.is_relative_to(SHIPPED_DIR) and t.builtin for t in tasks)
    assert [len(tasks[0].split(s)) for s in SPLITS] == [1000, 200, 200]
    manifest = json.loads((SHIPPED_DIR / "suite.json").read_text())
    assert hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()).hexdigest() == V3_FILES_SHA256
    # the README's runs were trained on exactly these bytes: their run names (config + legacy data hashes) resolve
    cfg = load_config(Path(__file__).parent.parent / "configs" / "tiny-suite-seq.yaml", [f"runs_dir={tmp_path}"])
    hashes, legacy = [t.hash for t in tasks], [t.legacy_hash for t in tasks]
    assert cfg.run_dir(hashes, legacy).name == "tiny-suite-seq-7bc0022e"
    (tmp_path / "tiny-suite-f58d63e8").mkdir()
    assert cfg.run_dir(hashes, legacy).name == "tiny-suite-f58d63e8"


def test_a_changed_shipped_file_is_refused(small_suite, tmp_path):
    packed = pack_suite(small_suite, tmp_path / "packed")
    assert (packed / "arith" / "train.json.gz").is_file() and not (packed / "arith" / "train.json").exists()
    assert [load_task(packed / n).hash for n in SUITE] == [load_task(small_suite / n).hash for n in SUITE]
    (packed / "arith" / "test.json.gz").write_bytes(gzip.compress(b"[]"))
    with pytest.raises(MclError, match=r"arith/test.json.gz: content differs from suite.json") as e:
        verify_suite(packed)
    assert "\n" not in str(e.value)


def test_cli_build_says_whether_it_matches_the_shipped_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache"))
    assert main(["data", "build", "--out", str(tmp_path / "small"), "--train", "5", "--eval", "2", "--test", "2"]) == 0
    assert "nothing to compare" in capsys.readouterr().out
    assert main(["data", "build", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "wrote 8 tasks" in out
    if sys.version_info[:2] == (3, 11):  # the shipped copy was built on 3.11; code/docqa read the stdlib
        assert "byte-identical to the shipped suite" in out and not compare_with_shipped(default_suite_dir())
    else:
        assert "differs from the shipped suite" in out


_LOAD_SCRIPT = """
import json, sys
from mcl.data import load_tasks
tasks = load_tasks(["mcl-suite"])
print(json.dumps({"hashes": [t.hash for t in tasks], "torch": "torch" in sys.modules}))
"""
_OTHER_PYTHONS = sorted((Path.home() / ".pyenv" / "versions").glob("3.1[0-9]*/bin/python"))


@pytest.mark.parametrize("python", [sys.executable, *map(str, _OTHER_PYTHONS)])
def test_shipped_suite_loads_identically_without_torch(python):
    """In a fresh interpreter (other Python versions where installed, bare: no torch), the same task hashes."""
    root = Path(__file__).parent.parent
    proc = subprocess.run([python, "-s", "-c", _LOAD_SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=root, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-1500:]
    got = json.loads(proc.stdout)
    assert got["torch"] is False
    assert got["hashes"] == [t.hash for t in load_tasks(["mcl-suite"])]
