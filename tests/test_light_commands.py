"""Light commands stay light: `mcl list`, `adapters info/check`, `report`, `data show/check/template` and every
`--help` run without importing torch or transformers (timings: benchmarks/startup.py); the registry index they
read is current; an adapter's header alone gives its shapes."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mcl.adapters import AdapterState, read_adapter, write_adapter_dir
from mcl.adapters.io import read_adapter_header
from mcl.cli.list_cmd import build_index, read_index
from mcl.cli.main import build_parser
from mcl.errors import MclError
from mcl.train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SUITE_TOPIC = ROOT / "mcl" / "data" / "assets" / "mcl-suite-v3" / "topic"


def _adapter(path: Path, seed: int = 0, r: int = 4) -> str:
    g = torch.Generator().manual_seed(seed)
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{key}.lora_A.weight": torch.randn(r, 32, generator=g), f"{key}.lora_B.weight": torch.randn(32, r, generator=g)}
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj"], "base_model_name_or_path": "tiny"}
    return str(write_adapter_dir(AdapterState(config=config, tensors=tensors), path))


def _parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*prefix, name))


def _finished_run(path: Path) -> str:
    (path / "metrics").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(RunConfig(name="r", tasks=["a", "b"]).to_dict()))
    (path / "metrics" / "R.csv").write_text(",a,b\na,0.5,0.1\nb,0.25,0.75\n")
    summary = {"tasks": ["a", "b"], "views": ["main"], "primary_view": "main",
               "score": {"OP": 0.5, "BWT": 0.0, "FWT": 0.0, "forgetting": 0.0}}
    (path / "metrics" / "summary.json").write_text(json.dumps(summary))
    return str(path)


def test_registry_index_is_generated_from_the_registries():
    assert read_index() == json.loads(json.dumps(build_index())), "run `python -m mcl.cli.list_cmd`"


def test_header_read_gives_the_shapes_the_full_read_gives(tmp_path):
    d = _adapter(tmp_path / "a")
    full, head = read_adapter(d), read_adapter_header(d)
    assert {k: tuple(t.shape) for k, t in full.tensors.items()} == {k: t.shape for k, t in head.tensors.items()}
    assert sum(t.numel() for t in head.tensors.values()) == 2 * 4 * 32 and head.config == full.config
    (Path(d) / "adapter_model.safetensors").write_bytes(b"\xff" * 7)
    with pytest.raises(MclError, match="corrupt safetensors file"):
        read_adapter_header(d)


def test_light_commands_and_every_help_import_no_torch(tmp_path):
    a, b = _adapter(tmp_path / "a", 0), _adapter(tmp_path / "b", 1)
    run = _finished_run(tmp_path / "run")
    commands = [["list"], ["adapters", "info", a], ["adapters", "check", a, b], ["data", "show", str(SUITE_TOPIC)],
                ["data", "check", str(SUITE_TOPIC)], ["data", "template", "FOMC"],
                ["report", run, "--out", str(tmp_path / "rep")]]
    helps = [[*prefix, "--help"] for prefix, _ in _parsers(build_parser())]
    script = f"""
import contextlib, io, sys
from mcl.cli.main import main
from mcl.cli.barrier_cmd import main as barrier_main
codes = []
for argv in {commands + helps!r} + [None]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            codes.append(main(argv) if argv else barrier_main(["--help"]))
        except SystemExit as e:
            codes.append(e.code)
print(codes, sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(helps) >= 20 and out.stdout.strip() == f"{[0] * (len(commands) + len(helps) + 1)} []"
    assert (tmp_path / "rep" / "report.csv").is_file()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_header_read_finds_nan_and_inf_in_every_float_dtype(tmp_path, dtype):
    d = Path(_adapter(tmp_path / "a"))
    state = read_adapter(d)
    read_adapter_header(d)  # finite: no error
    for bad in (float("nan"), float("inf")):
        tensors = {k: v.to(dtype) for k, v in state.tensors.items()}
        next(iter(tensors.values()))[1, 2] = bad
        write_adapter_dir(AdapterState(config=state.config, tensors=tensors), tmp_path / "bad")
        with pytest.raises(MclError, match="contains NaN or Inf"):
            read_adapter_header(tmp_path / "bad")


def test_data_new_writes_a_valid_task_dir_and_refuses_a_full_one(tmp_path, capsys):
    from mcl.cli.main import main
    from mcl.data.load import load_task

    assert main(["data", "new", "reviews", str(tmp_path / "reviews"), "--metric", "exact_match"]) == 0
    task = load_task(str(tmp_path / "reviews"))
    assert (task.name, task.metric, task.spec.max_new_tokens) == ("reviews", "exact_match", 16)
    assert [len(task.split(s)) for s in ("train", "eval", "test")] == [1, 1, 1]
    assert main(["data", "check", str(tmp_path / "reviews")]) == 0
    before = (tmp_path / "reviews" / "task.json").read_text()
    capsys.readouterr()
    assert main(["data", "new", "reviews", str(tmp_path / "reviews")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "reviews" / "task.json").read_text() == before
    assert main(["data", "new", "bad", str(tmp_path / "x"), "--metric", "nope"]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("names", [["q_proj"], ["self_attn.q_proj", "v_proj"], ["proj"], ["layers.0.mlp.up_proj"],
                                   ["model.layers.1.self_attn.q_proj"], ["q"]])
def test_plain_target_lists_match_as_peft_matches_them(names):
    from types import SimpleNamespace

    from peft.tuners.tuners_utils import check_target_module_exists

    from mcl.adapters.compat import _targets, _targeted

    targets = _targets({"target_modules": names})
    modules = [f"model.layers.{i}.{m}" for i in (0, 1) for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj")]
    peft_config = SimpleNamespace(**vars(targets))
    assert [_targeted(targets, m) for m in modules] == [bool(check_target_module_exists(peft_config, m)) for m in modules]
