"""Base models: named-model resolution, the shipped tiny model, the SmolLM2 conversion (slow)."""

import math

import pytest
import torch

from mcl import models
from mcl.cli.main import main
from mcl.errors import MclError


def test_unknown_name_and_missing_dir_are_one_line_errors(capsys, tmp_path):
    assert main(["models", "prepare", "llama-9000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model name 'llama-9000'" in err and len(err.splitlines()) == 1
    assert main(["models", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1


def test_hub_id_not_cached_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MclError, match="not a named model"):
        models.resolve_model("some-org/not-a-cached-model")


def test_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(MclError, match="no config.json"):
        models.resolve_model(tmp_path)


def test_tiny_model_loss_far_below_uniform():
    from mcl.models.tiny import heldout_loss, heldout_stream

    model, tok = models.load_base("tiny")
    assert tok.bos_token_id is not None and tok.pad_token_id is not None
    loss = heldout_loss(model, heldout_stream(tok), seq_len=256, max_windows=32)
    uniform = math.log(len(tok))
    assert loss < 0.5 * uniform, (loss, uniform)


@pytest.mark.slow
def test_smollm2_conversion_knows_paris():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.prepare("smollm2")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) > 130e6
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_heldout_text_ships_and_fills_every_window(monkeypatch):
    """The held-out loss reads only shipped text (not this interpreter's stdlib): 64 full windows of 256 tokens."""
    from transformers import PreTrainedTokenizerFast

    from mcl.models import tiny

    monkeypatch.setattr(tiny, "stdlib_files", lambda split: pytest.fail("held-out text must not come from the stdlib"))
    tok = PreTrainedTokenizerFast.from_pretrained(tiny.ASSET_DIR)
    assert len(tiny.heldout_texts()) == 6 and len(tiny.heldout_stream(tok)) >= 64 * 256
