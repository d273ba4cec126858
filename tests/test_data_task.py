"""Task formats: loading TRACE-format dirs (.json, .jsonl, .gz, task.json) and one-line errors on bad input."""

import gzip
import json

import pytest

from mcl.cli.main import main
from mcl.data import Example, load_task, load_tasks
from mcl.errors import MclError

ROWS = [{"prompt": "2+2=", "answer": "4"}, {"prompt": "Capital of France?", "answer": "Paris"}]


def test_hand_written_trace_dir_loads(write_task_dir):
    d = write_task_dir("qa", {"train": ROWS, "eval": ROWS[:1], "test": ROWS[1:]}, spec={"metric": "rouge_l", "max_new_tokens": 8})
    task = load_task(d)
    assert task.name == "qa" and task.metric == "rouge_l" and task.spec.max_new_tokens == 8
    assert task.available_splits() == ["train", "eval", "test"]
    assert task.split("train") == [Example("2+2=", "4"), Example("Capital of France?", "Paris")]
    assert task.split("test") == [Example("Capital of France?", "Paris")]


def test_jsonl_and_explicit_metric_without_task_json(write_task_dir):
    d = write_task_dir("lines", {"train": ROWS, "test": ROWS}, jsonl=True)
    task = load_task(f"{d}:rouge_l")
    assert task.metric == "rouge_l" and task.spec.max_new_tokens == 32 and task.split("test")[1].answer == "Paris"


def test_gzipped_splits_read_like_plain_ones(write_task_dir):
    d = write_task_dir("gz", {"train": ROWS}, spec={"metric": "accuracy"})
    plain = load_task(d)
    (d / "train.json.gz").write_bytes(gzip.compress((d / "train.json").read_bytes()))
    (d / "train.json").unlink()
    packed = load_task(d)
    assert packed.split("train") == plain.split("train") and packed.hash == plain.hash


def test_dir_without_task_json_is_an_error_naming_the_template(write_task_dir):
    d = write_task_dir("NumGLUE_cm", {"train": ROWS})
    with pytest.raises(MclError, match=r"no task.json; copy the TRACE template: mcl data template NumGLUE-cm") as e:
        load_task(d)
    assert "\n" not in str(e.value) and f"{d}:METRIC" in str(e.value)
    d = write_task_dir("mine", {"train": ROWS})
    with pytest.raises(MclError, match=r"mine: no task.json .*NAME: 20Minuten, C-STANCE, FOMC, MeetingBank"):
        load_task(d)
    with pytest.raises(MclError, match="unknown task"):
        load_task(f"{d}:bleu")


def test_hash_is_stable_and_content_sensitive(write_task_dir):
    a = write_task_dir("a", {"train": ROWS}, spec={})
    b = write_task_dir("b", {"train": ROWS}, spec={"name": "a"})
    c = write_task_dir("c", {"train": ROWS[:1]}, spec={"name": "a"})
    assert load_task(a).hash == load_task(b).hash != load_task(c).hash


def _raises(path, match):
    with pytest.raises(MclError, match=match) as e:
        load_task(f"{path}:accuracy").split("train")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (json.dumps([{"prompt": "a", "answer": "b"}, {"prompt": "c"}]), r"train.json: item 1: missing key 'answer'"),
        (json.dumps([{"answer": "b"}]), r"item 0: missing key 'prompt'"),
        (json.dumps([{"prompt": "a", "answer": 3}]), r"item 0: 'answer' must be a string"),
        ("", r"empty file"),
        ("[]", r"no examples"),
        ('[{"prompt": "a", "answer": "b"},\n {"prompt": ', r"malformed JSON at line 2"),
        (json.dumps({"prompt": "a", "answer": "b"}), r"expected a JSON list"),
    ],
)
def test_bad_json_split_names_file_and_item(tmp_path, content, match):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.json").write_text(content)
    _raises(tmp_path / "t", match)


def test_bad_jsonl_names_line(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.jsonl").write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "a"\n')
    _raises(tmp_path / "t", r"train.jsonl: line 3: malformed JSON")
    (tmp_path / "t" / "train.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    _raises(tmp_path / "t", r"train.jsonl: line 2: missing key 'answer'")


def test_missing_split_and_empty_dir(write_task_dir, tmp_path):
    d = write_task_dir("t", {"train": ROWS}, spec={})
    with pytest.raises(MclError, match=r"t/eval.json \(or .jsonl\): split 'eval' not found"):
        load_task(d).split("eval")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MclError, match="no split files"):
        load_task(tmp_path / "empty")


def test_unknown_task_name_and_bad_spec(write_task_dir):
    with pytest.raises(MclError, match="unknown task 'nope'.*built-in task"):
        load_tasks(["nope"])
    d = write_task_dir("t", {"train": ROWS}, spec={"metric": "bleu"})
    with pytest.raises(MclError, match=r"task.json: unknown metric 'bleu'"):
        load_task(d)
    d = write_task_dir("u", {"train": ROWS}, spec={"metirc": "accuracy"})
    with pytest.raises(MclError, match=r"task.json: unknown key\(s\) \['metirc'\]"):
        load_task(d)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.json").write_text(json.dumps([{"prompt": "a", "answer": "b"}, {"answer": "x"}]))
    assert main(["data", "show", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no task.json" in err
    (tmp_path / "t" / "task.json").write_text("{}")
    assert main(["data", "show", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.json: item 1: missing key 'prompt'" in err
    assert main(["data", "show", "no-such-task"]) == 2
    assert "unknown task 'no-such-task'" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "t"), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split 'test' not found" in err
