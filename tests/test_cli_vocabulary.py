"""One CLI vocabulary: aliases, help on every argument, registry names in help, options in any order, new errors."""

import argparse

import pytest

from mcl.cli.barrier_cmd import build_parser as barrier_parser
from mcl.cli.common import DEFAULT_POINTS
from mcl.cli.main import build_parser, main
from mcl.cli.train_cmd import QUICK_DEFAULTS, normalize_argv

EVALUATING = {  # command argv prefix -> the positionals it needs
    ("eval",): [],
    ("barrier",): ["A", "B"],
    ("plane",): ["A", "B", "C", "--out", "o"],
    ("barrier-matrix",): ["A", "B"],
    ("curve", "fit"): ["A", "B", "--out", "o"],
}


def _parsers(parser: argparse.ArgumentParser, prefix=()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*prefix, name))


@pytest.mark.parametrize("command", list(EVALUATING))
def test_base_and_data_are_aliases_of_model_and_tasks(command):
    parser = build_parser()
    old = parser.parse_args([*command, *EVALUATING[command], "--base", "tiny", "--data", "t1", "t2"])
    new = parser.parse_args([*command, *EVALUATING[command], "--model", "tiny", "--tasks", "t1", "t2"])
    assert old.model == new.model == "tiny" and old.tasks == new.tasks == ["t1", "t2"]


@pytest.mark.parametrize("command", list(EVALUATING))
def test_evaluating_commands_share_flags_and_defaults(command):
    args = build_parser().parse_args([*command, *EVALUATING[command], "--model", "tiny", "--threads", "1"])
    assert args.threads == 1 and args.max_len is None and not args.quiet  # None: from the run record or the data
    if command != ("curve", "fit"):  # the fit's batch is per task per step
        assert args.batch_size == 32 and args.split == "eval" and args.limit is None
        assert args.metric is (command == ("eval",))  # eval scores the metric; sweeps opt in (it generates per point)
        flipped = build_parser().parse_args([*command, *EVALUATING[command], "--model", "m",
                                             "--no-metric" if args.metric else "--metric"])
        assert flipped.metric is not args.metric


def test_points_default_is_the_same_everywhere():
    sweeps = [barrier_parser().parse_args(["A", "B"]), build_parser().parse_args(["barrier-matrix", "A", "B"])]
    assert [a.points for a in sweeps] == [DEFAULT_POINTS, DEFAULT_POINTS]


def test_no_generate_still_means_loss_only():
    assert build_parser().parse_args(["eval", "--model", "tiny", "--no-generate"]).metric is False


def test_every_argument_has_help():
    undocumented = [(" ".join(prefix), a.dest) for prefix, p in _parsers(build_parser()) for a in p._actions
                    if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert undocumented == []


@pytest.mark.parametrize("argv,names", [
    (["barrier"], ["linear", "bezier", "polychain", "factors", "delta", "merged"]),
    (["plane"], ["factors", "delta", "merged", "polychain"]),
    (["curve", "fit"], ["bezier", "polychain"]),
    (["train"], ["seq", "er", "ewc", "ilora"]),
])
def test_help_lists_registry_names(argv, names, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in names), text


@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--quiet", "method=er", "train.lr=0.1"],
    ["train", "--quiet", "c.yaml", "method=er", "--train.lr=0.1"],
    ["train", "method=er", "c.yaml", "--set", "train.lr=0.1", "--quiet"],
])
def test_train_takes_overrides_and_options_in_any_order(argv):
    args = build_parser().parse_args(normalize_argv(argv))
    assert args.config == "c.yaml" and args.quiet and sorted(args.overrides) == ["method=er", "train.lr=0.1"]


def test_train_without_config_is_a_small_run_of_real_tasks():
    from mcl.data import load_tasks
    from mcl.train.config import load_config

    cfg = load_config(None, QUICK_DEFAULTS)
    assert cfg.model == "tiny" and cfg.train.steps_per_task <= 20 and len(cfg.tasks) <= 3
    assert [t.name for t in load_tasks(cfg.tasks)] == cfg.tasks


def test_unmatched_lora_targets_are_one_line_naming_the_linear_layers(tmp_path, tiny_tokenizer, write_task_dir, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                               bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
                    ).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    rows = [{"prompt": "say a ->", "answer": "a"}] * 4
    task = write_task_dir("say", {"train": rows, "eval": rows}, spec={"metric": "accuracy", "max_new_tokens": 2})
    runs = tmp_path / "runs"
    capsys.readouterr()  # drop the model-saving progress output
    rc = main(["train", f"model={base}", f"tasks=[{task}]", f"runs_dir={runs}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert "q_proj" in err and all(name in err for name in ("c_attn", "c_fc", "c_proj")), err
    assert not runs.exists() or not any(runs.iterdir())



def test_adapters_check_on_an_ilora_task_dir_suggests_its_learners(tmp_path, tiny_llama, capsys):
    from peft import LoraConfig, get_peft_model

    task_dir = tmp_path / "tasks" / "0-first"
    peft = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for learner in ("fast", "slow"):
        peft.save_pretrained(task_dir / learner)
    rc = main(["adapters", "check", str(task_dir), str(task_dir / "slow")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and f"{task_dir / 'slow'}" in err and f"{task_dir / 'fast'}" in err, err
