"""Data identity: a task's hash covers what changes results (rows of its splits, metric, generation length), not its
description; a changed task is named with what changed; runs and records made under the legacy hash still resolve."""

import json

import pytest

from mcl.data.load import load_recorded, load_task, task_record
from mcl.data.task import load_task_dir
from mcl.errors import MclError
from mcl.io import sha256_json
from mcl.train.config import load_config


def _dir(write_task_dir, spec=None):
    rows = {s: [{"prompt": f"{s} {i} ->", "answer": str(i % 2)} for i in range(4)] for s in ("train", "eval", "test")}
    return write_task_dir("parity", rows, spec={"metric": "accuracy", "max_new_tokens": 2, "description": "old words",
                                                 **(spec or {})})


def _spec(d, **changes):
    spec = json.loads((d / "task.json").read_text())
    (d / "task.json").write_text(json.dumps({**spec, **changes}))
    return load_task_dir(d)


def test_descriptions_do_not_change_the_hash_and_results_changing_fields_do(write_task_dir):
    d = _dir(write_task_dir)
    before = load_task_dir(d)
    parts = before.hash_parts()
    assert before.hash == sha256_json(parts) and set(parts) == {"metric", "max_new_tokens", "splits"}
    assert parts["splits"]["eval"] == sha256_json([[f"eval {i} ->", str(i % 2)] for i in range(4)])
    assert _spec(d, description="new words", source="me", chance=0.5, labels=["0", "1"]).hash == before.hash
    assert _spec(d, metric="exact_match").hash != before.hash
    assert _spec(d, metric="accuracy", max_new_tokens=3).hash != before.hash


def test_a_changed_task_names_what_changed_and_the_tasks_flag(write_task_dir):
    d = _dir(write_task_dir)
    record = task_record(load_task(str(d)))
    _spec(d, description="edited")
    assert load_recorded(record).hash == record["hash"]  # a description edit keeps the checkpoint's data
    _spec(d, max_new_tokens=5)
    (d / "eval.json").write_text(json.dumps([{"prompt": "x", "answer": "y"}]))
    with pytest.raises(MclError) as e:
        load_recorded(record)
    assert "(max_new_tokens 2 → 5, split eval rows changed); pass --tasks DIR" in str(e.value)
    assert "--data" not in str(e.value)


def test_records_and_run_dirs_under_the_legacy_hash_still_resolve(write_task_dir, tmp_path):
    d = _dir(write_task_dir)
    task = load_task(str(d))
    legacy_record = {"name": task.name, "source": str(d), "dir": str(d.resolve()), "hash": task.legacy_hash}
    assert task.legacy_hash == sha256_json({"spec": task.spec.to_json(), "splits": {
        s: [[e.prompt, e.answer] for e in task.split(s)] for s in ("train", "eval", "test")}})
    assert load_recorded(legacy_record).name == "parity"
    cfg = load_config(None, [f"runs_dir={tmp_path / 'runs'}", "name=demo", "method=er"])
    new = cfg.run_dir([task.hash], [task.legacy_hash])
    assert new.name == f"demo-er-{cfg.run_hash([task.hash])}" and not new.exists()
    old = tmp_path / "runs" / f"demo-{cfg.run_hash([task.legacy_hash])}"
    old.mkdir(parents=True)
    assert cfg.run_dir([task.hash], [task.legacy_hash]) == old
    new.mkdir()
    assert cfg.run_dir([task.hash], [task.legacy_hash]) == new  # a run under the new name wins
