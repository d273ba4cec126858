"""Device and precision plumbing on CPU: --device/--dtype on every model-loading command, bf16 sweeps and eval."""

import json

import pytest
import torch

from mcl.adapters import read_adapter
from mcl.analysis import PointCache, evaluators, sweep
from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main
from mcl.errors import MclError
from mcl.models import load_base
from mcl.models.device import resolve_device, resolve_dtype
from mcl.paths import Linear
from test_barrier_cli import setting  # noqa: F401  (module fixture: tiny base dir, two tasks, two plain-peft adapters)

NO_GPU = not torch.cuda.is_available()


def test_dtype_and_device_names():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float16") is torch.float16
    assert resolve_dtype(None) is torch.float32 and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MclError, match="unknown dtype"):
        resolve_dtype("int8")
    with pytest.raises(MclError, match="unknown device"):
        resolve_device("gpu0")


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", [
    ["eval", "--model", "{base}", "--tasks", "{task}", "--device", "cuda"],
    ["barrier", "{a}", "{b}", "--data", "{task}", "--device", "cuda"],
    ["plane", "{a}", "{b}", "{a}", "--data", "{task}", "--out", "{tmp}/p", "--device", "cuda"],
    ["curve", "fit", "{a}", "{b}", "--data", "{task}", "--out", "{tmp}/c", "--device", "cuda"],
    ["barrier-matrix", "{a}", "{b}", "--data", "{task}", "--out", "{tmp}/m", "--device", "cuda"],
])
def test_cuda_without_gpu_is_a_one_line_error(setting, tmp_path, capsys, command):  # noqa: F811
    fill = {"base": setting["base"], "task": setting["tasks"][0], "a": setting["a"], "b": setting["b"], "tmp": tmp_path}
    assert main([c.format(**fill) for c in command]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a CUDA GPU")
def test_mcl_barrier_and_python_api_refuse_cuda_without_gpu(setting, capsys):  # noqa: F811
    assert barrier_main([setting["a"], setting["b"], "--data", setting["tasks"][0], "--device", "cuda:0"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(MclError, match="no CUDA GPU"):
        load_base(setting["base"], device="cuda")


def test_load_base_dtype_and_device(setting):  # noqa: F811
    model, _ = load_base(setting["base"], dtype="bf16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert next(model.parameters()).device.type == "cpu"


def test_bf16_sweep_is_finite_close_to_fp32_and_cached_apart(setting, tmp_path):  # noqa: F811
    a, b = read_adapter(setting["a"]), read_adapter(setting["b"])
    cache = PointCache(tmp_path / "cache")
    losses = {}
    for dtype in ("fp32", "bf16"):
        model, tok = load_base(setting["base"], dtype=dtype)
        frame = sweep(Linear(a, b), model, evaluators(tok, setting["tasks"]), 3, cache=cache, progress=False)
        assert not frame.cached.any()  # bf16 points are not served from fp32 records
        losses[dtype] = frame.loss.to_numpy()
    assert (losses["bf16"] > 0).all() and torch.isfinite(torch.tensor(losses["bf16"])).all()
    # bf16 weights (8-bit mantissa) move each loss by well under 2%; the fp32 values differ from point to point
    assert abs(losses["bf16"] - losses["fp32"]).max() < 0.02 * losses["fp32"].max()
    assert abs(losses["fp32"] - losses["fp32"][0]).max() > 0.05


def test_eval_and_barrier_cli_in_bf16_on_cpu(setting, tmp_path, capsys):  # noqa: F811
    out32, out16 = tmp_path / "e32.json", tmp_path / "e16.json"
    for dtype, out in (("fp32", out32), ("bf16", out16)):
        assert main(["eval", "--model", setting["base"], "--adapter", setting["a"], "--tasks", *setting["tasks"],
                     "--device", "cpu", "--dtype", dtype, "--out", str(out)]) == 0
    r32, r16 = (json.loads(o.read_text())["results"] for o in (out32, out16))
    for x, y in zip(r32, r16):
        assert y["loss"] == pytest.approx(x["loss"], rel=0.02) and y["metric"] is not None
    out = tmp_path / "barrier"
    assert barrier_main([setting["a"], setting["b"], "--data", setting["tasks"][0], "--points", "3", "--quiet",
                         "--no-cache", "--dtype", "bf16", "--device", "cpu", "--out", str(out)]) == 0
    assert all(v > 0 for v in json.loads((out / "barrier.json").read_text())["tasks"]["first"]["loss"])
