"""The memory formula: exact parts equal live tensor bytes, the whole within 25 % of measured peaks, the 7B configs
fit their GPUs, and a run prints its estimate (and on a GPU refuses what cannot fit)."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import LoraSpec, add_lora, lora_parameters
from mcl.errors import MclError
from mcl.train.config import load_config
from mcl.train.memory import GIB, GPU_GIB, LLAMA2_7B, Shape, check_run_memory, estimate, estimate_run
from test_train import _cfg, setting  # noqa: F401  (module fixture)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=500, tie_word_embeddings=False)


@pytest.mark.parametrize("shape", [SMOLLM2, TINY])
def test_base_parameter_count_is_exact(shape):
    config = LlamaConfig(**shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert Shape.from_config(config).base_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"]])
def test_lora_bytes_and_optimizer_state_are_exact(targets):
    config = LlamaConfig(**TINY)
    spec = LoraSpec(r=4, target_modules=targets)
    model = add_lora(LlamaForCausalLM(config).to(torch.bfloat16), spec, seed=0)
    params = list(lora_parameters(model).values())
    assert {p.dtype for p in params} == {torch.float32}
    for p in params:
        p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW(params)
    opt.step()
    live = sum(p.numel() * p.element_size() for p in params) * 2  # weights + grads
    live += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.dim())
    base = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    est = estimate(Shape.from_config(config), spec, "ilora", model_dtype="bf16")
    assert est.lora_and_optimizer * GIB == live and est.base * GIB == base
    assert est.slow_learner * GIB == sum(p.numel() * 4 for p in params)


def test_llama2_7b_orderings():
    spec = LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
    fp32 = estimate(LLAMA2_7B, spec, "seq", 1, 1024, "fp32")
    bf16 = estimate(LLAMA2_7B, spec, "seq", 1, 1024, "bf16")
    assert fp32.base == pytest.approx(2 * bf16.base) and 12 < bf16.base < 13  # 6.74B params × 2 bytes
    plain = estimate(LLAMA2_7B, spec, "ilora", 8, 1024, "bf16")
    ckpt = estimate(LLAMA2_7B, spec, "ilora", 8, 1024, "bf16", checkpointing=True)
    assert ckpt.activations < plain.activations / 5 and ckpt.fits(80) and not plain.fits(80)


@pytest.mark.parametrize("method", ["seq", "er", "ilora"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_formula_is_within_25_percent_of_the_measured_peak(method, checkpointing):
    """benchmarks/memory_check.py's measurement (profiler allocator events of one real CPU step) on the tiny shape."""
    import memory_check

    row = memory_check.compare("tiny", method, checkpointing, batch=4, seq_len=128)
    shape, dtype, _, targets = memory_check.CASES["tiny"]
    fixed = estimate(Shape.from_config(shape), LoraSpec(r=8, target_modules=targets), method, 4, 128, dtype)
    assert fixed.activations / row["measured_gib"] > 0.3  # activations are a large share: the check is not trivial
    assert 0.75 <= row["ratio"] <= 1.25, row


def test_formula_tracks_the_per_layer_consistency_term():
    """I-LoRA's extra is one set of slow states per layer (fp32), not the concatenated fp32 copies of before."""
    spec = LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
    er, il = (estimate(LLAMA2_7B, spec, m, 16, 1536, "fp32") for m in ("er", "ilora"))
    assert (il.activations - er.activations) * GIB == 16 * 1536 * 32 * 4096 * 4


def _llama2_7b_shape() -> Shape:
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shape = Shape.from_config(config)
    assert shape == LLAMA2_7B and shape.base_params() == sum(p.numel() for p in model.parameters())
    return shape


@pytest.mark.parametrize("name, gib, smaller", [("llama2-7b-trace-40gb", GPU_GIB[40], GPU_GIB[24]),
                                               ("llama2-7b-trace-80gb", GPU_GIB[80], GPU_GIB[40])])
def test_shipped_7b_configs_fit_their_gpu_by_the_formula(name, gib, smaller):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.train.max_len == 1536 and cfg.train.gradient_checkpointing and cfg.model_dtype == "bf16"
    assert cfg.train.batch_size * cfg.train.grad_accum == 32  # TRACE's global batch on one GPU
    est = estimate_run(cfg, _llama2_7b_shape())
    assert est.fits(gib) and not est.fits(smaller), est.total


def test_a_run_prints_its_estimate_and_a_gpu_too_small_refuses_it(tmp_path, monkeypatch):
    cfg = load_config(None, model="tiny", runs_dir=str(tmp_path), **{"train.batch_size": 64, "train.max_len": 512})
    lines = []
    est = check_run_memory(cfg, torch.device("cpu"), lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"memory estimate per device: {est.total:.1f} GiB")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: its free memory is stated
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(0.5 * GIB), 80 * GIB))
    with pytest.raises(MclError, match=r"needs about .* 0.5 GiB are free: lower train.batch_size") as err:
        check_run_memory(cfg, torch.device("cuda"), lines.append)
    assert "\n" not in str(err.value) and "train.ignore_memory_check=true" in str(err.value)
    cfg.train.ignore_memory_check = True
    assert check_run_memory(cfg, torch.device("cuda"), lines.append) == est
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GIB, 80 * GIB))
    cfg.train.ignore_memory_check = False
    assert check_run_memory(cfg, torch.device("cuda"), lines.append) == est and "80.0 GiB free" in lines[-1]


def test_train_prints_the_estimate_before_loading_the_model(setting, tmp_path, capsys, monkeypatch):
    import mcl.models

    from mcl.train.loop import train

    monkeypatch.setattr(mcl.models, "load_base", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("loaded")))
    with pytest.raises(RuntimeError, match="loaded"):
        train(_cfg(setting, tmp_path), progress_bar=False)
    assert "memory estimate per device:" in capsys.readouterr().out


def test_ignore_memory_check_leaves_the_run_hash_alone(tmp_path):
    a = load_config(None, runs_dir=str(tmp_path))
    b = load_config(None, runs_dir=str(tmp_path), **{"train.ignore_memory_check": True})
    assert b.train.ignore_memory_check and a.run_hash(["x"]) == b.run_hash(["x"])


def test_a_model_the_formula_does_not_know_gets_no_estimate_and_no_refusal(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100).save_pretrained(tmp_path / "gpt2")
    cfg = load_config(None, model=str(tmp_path / "gpt2"), runs_dir=str(tmp_path))
    lines = []
    assert check_run_memory(cfg, torch.device("cpu"), lines.append) is None
    assert lines == [f"memory estimate: none ({tmp_path / 'gpt2'} is not a LLaMA-style decoder the formula knows)"]
