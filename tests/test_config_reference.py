"""The config reference (docs/config.md, --help-config), Hugging Face key aliases, `--key value`, --dry-run, --version."""

import dataclasses

import pytest

from mcl.cli.main import main
from mcl.cli.train_cmd import normalize_argv
from mcl.errors import MclError
from mcl.train.config import ALIASES, RunConfig, load_config
from mcl.train.config_doc import DOC_PATH, config_keys, reference


def test_docs_config_md_is_generated_from_the_dataclasses():
    assert DOC_PATH.read_text(encoding="utf-8") == reference(), "run `python -m mcl.train.config_doc`"


def test_every_config_key_has_a_type_default_and_meaning():
    keys = {k: (kind, default, meaning) for k, kind, default, meaning in config_keys()}
    assert keys["train.lr"] == ("float", "0.001", "peak learning rate of AdamW (HF's learning_rate)")
    assert keys["lora.alpha"][1] == "16.0" and keys["eval.generate"][1] == "true"
    assert all(meaning for _, _, meaning in keys.values()), [k for k, v in keys.items() if not v[2]]
    leaves = sum(len(dataclasses.fields(getattr(RunConfig(), f.name))) if dataclasses.is_dataclass(getattr(RunConfig(), f.name))
                 else 1 for f in dataclasses.fields(RunConfig))
    assert len(keys) == leaves == 39


def test_hugging_face_names_resolve_to_mcl_keys_and_keep_the_run_hash():
    hf = load_config(None, ["learning_rate=2e-3", "train.per_device_train_batch_size=4", "gradient_accumulation_steps=2",
                            "max_steps=7", "lora.lora_alpha=32", "lora_dropout=0.1", "warmup_steps=3"])
    ours = load_config(None, ["train.lr=2e-3", "train.batch_size=4", "train.grad_accum=2", "train.steps_per_task=7",
                              "lora.alpha=32", "lora.dropout=0.1", "train.warmup=3"])
    assert hf == ours and hf.run_hash(["h"]) == ours.run_hash(["h"])
    assert (hf.train.lr, hf.train.batch_size, hf.train.grad_accum, hf.train.steps_per_task) == (2e-3, 4, 2, 7)
    assert set(ALIASES) >= {"learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                            "max_steps", "lora_alpha"}


def test_aliases_in_yaml_sections_and_an_override_of_the_files_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 0.002\nlora:\n  alpha: 8\n")
    cfg = load_config(path, ["lora_alpha=32"])  # a later override of the file's key by its HF name wins
    assert (cfg.train.lr, cfg.lora.alpha) == (0.002, 32.0)
    path.write_text("train:\n  learning_rate: 0.002\n  lr: 0.001\n")
    with pytest.raises(MclError, match="train.learning_rate and train.lr are the same setting"):
        load_config(path)


def test_all_linear_is_peft_s_keyword_in_one_canonical_form(tiny_llama):
    from mcl.adapters import add_lora

    a = load_config(None, ["lora.target_modules=all-linear"])
    b = load_config(None, lora={"target_modules": ["all-linear"]})
    assert a.lora.target_modules == b.lora.target_modules == "all-linear"
    assert a.run_hash(["h"]) == b.run_hash(["h"]) != load_config(None).run_hash(["h"])
    with pytest.raises(MclError, match="all-linear stands alone"):
        load_config(None, ["lora.target_modules=all-linear,q_proj"])
    peft = add_lora(tiny_llama, a.lora)
    adapted = {n.rsplit(".", 1)[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_key_value_with_a_space_is_an_override():
    assert normalize_argv(["train", "c.yaml", "--train.lr", "5e-4", "--quiet", "--lora.r", "4", "--device", "cpu"]) == [
        "train", "c.yaml", "--set", "train.lr=5e-4", "--quiet", "--set", "lora.r=4", "--device", "cpu"]
    assert normalize_argv(["train", "--train.lr=5e-4", "method=er"]) == ["train", "--set", "train.lr=5e-4", "--set", "method=er"]


def test_dry_run_prints_the_run_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dry-run", "--learning_rate", "5e-4", f"runs_dir={tmp_path / 'runs'}",
                 "per_device_train_batch_size=4", "gradient_accumulation_steps=3"]) == 0
    out = capsys.readouterr().out
    cfg = load_config(None, ["train.steps_per_task=20", "train.warmup=2", "eval.max_examples=20", "train.lr=5e-4",
                             f"runs_dir={tmp_path / 'runs'}", "train.batch_size=4", "train.grad_accum=3"])
    from mcl.train.loop import resolve_run_dir

    assert f"run dir: {resolve_run_dir(cfg)} (new)" in out
    assert "  lr: 0.0005\n" in out and "global batch: 12 examples per optimizer step" in out
    assert "memory estimate per GPU: " in out and " GiB (base " in out
    assert list(tmp_path.iterdir()) == []


def test_version_and_help_config(capsys):
    from mcl import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"mcl {__version__}\n"
    with pytest.raises(SystemExit) as e:
        main(["train", "--help-config"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "train.lr (float, default 0.001)\n    peak learning rate" in out
    assert "learning_rate → train.lr" in out
