"""The built-in suite: byte-identical builds per seed, disjoint splits, valid specs, name resolution."""

import pytest

from mcl.cli.main import main
from mcl.data import SPLITS, SUITE, Sizes, build_suite, load_task, load_tasks
from mcl.eval.metrics import METRICS

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


def test_cli_build_and_built_in_names_resolve_to_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MCL_CACHE", str(tmp_path / "cache"))
    assert main(["data", "build", "--seed", "0"]) == 0
    assert "wrote 8 tasks" in capsys.readouterr().out
    (arith,) = load_tasks(["arith"])
    assert arith.path.is_relative_to(tmp_path / "cache") and len(arith.split("train")) == 1000
    assert [t.name for t in load_tasks(["mcl-suite"])] == list(SUITE)
