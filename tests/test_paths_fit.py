"""Curve fitting: endpoints stay fixed, the curve's loss drops, a resumed fit equals an uninterrupted one."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import read_adapter
from mcl.errors import MclError
from mcl.paths import Linear
from mcl.paths.fit import FitConfig, fit_curve, load_curve, read_curve

X = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))


def tiny_base():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def loss_at(model, step):
    return F.cross_entropy(model(input_ids=X).logits.flatten(0, 1), Y.flatten())


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    out = []
    for seed in (1, 2):
        model = get_peft_model(tiny_base(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        model.save_pretrained(d / str(seed))
        out.append(read_adapter(d / str(seed)))
    return out


def path_loss(path, ts=(0.25, 0.5, 0.75)):
    model = tiny_base()
    with path.bind(model) as live, torch.no_grad():
        losses = []
        for t in ts:
            live.apply(path.point(t))
            losses.append(float(loss_at(live.model, 0)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("space", ["factors", "delta"])
def test_fit_lowers_the_curve_and_keeps_endpoints(ab, space, tmp_path):
    a, b = ab
    cfg = FitConfig(path="bezier", space=space, controls=1, steps=30, lr=2e-2)
    path, history = fit_curve(a, b, tiny_base(), loss_at, cfg, tmp_path / "curve", progress=False)
    assert len(history) == 30
    assert path_loss(path) < path_loss(Linear(a, b, space=space)) - 0.05
    assert path.nodes[0] is a and path.nodes[-1] is b
    info = read_curve(tmp_path / "curve")
    assert info["path"] == "bezier" and info["space"] == space and len(info["controls"]) == 1
    PeftModel.from_pretrained(tiny_base(), info["controls"][0])  # a control point is a plain PEFT dir
    again = load_curve(tmp_path / "curve")
    for k, v in path.point(0.4).tensors.items():
        torch.testing.assert_close(again.point(0.4).tensors[k], v)


def test_resumed_fit_equals_uninterrupted(ab, tmp_path):
    a, b = ab
    full, _ = fit_curve(a, b, tiny_base(), loss_at, FitConfig(path="polychain", controls=2, steps=8, lr=1e-2), progress=False)
    fit_curve(a, b, tiny_base(), loss_at, FitConfig(path="polychain", controls=2, steps=5, lr=1e-2, checkpoint_every=2),
              tmp_path / "c", progress=False)
    resumed, history = fit_curve(a, b, tiny_base(), loss_at, FitConfig(path="polychain", controls=2, steps=8, lr=1e-2),
                                 tmp_path / "c", progress=False)
    assert len(history) == 8
    for c_full, c_res in zip(full.controls, resumed.controls):
        for k in c_full.tensors:
            torch.testing.assert_close(c_res.tensors[k], c_full.tensors[k], atol=1e-6, rtol=1e-6)


def test_fit_rejects_other_settings_in_the_same_dir_and_bad_configs(ab, tmp_path):
    a, b = ab
    fit_curve(a, b, tiny_base(), loss_at, FitConfig(steps=2), tmp_path / "c", progress=False)
    with pytest.raises(MclError, match="other endpoints or settings"):
        fit_curve(a, b, tiny_base(), loss_at, FitConfig(steps=2, lr=0.5), tmp_path / "c", progress=False)
    with pytest.raises(MclError, match="factors or delta"):
        fit_curve(a, b, tiny_base(), loss_at, FitConfig(space="merged"), progress=False)
    with pytest.raises(MclError, match="control points"):
        fit_curve(a, b, tiny_base(), loss_at, FitConfig(path="linear"), progress=False)
