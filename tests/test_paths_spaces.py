"""Interpolation spaces and paths: exact endpoints, linear ΔW in delta space, Bezier/PolyChain identities."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from mcl.adapters import read_adapter
from mcl.errors import MclError
from mcl.paths import PATHS, Bezier, Linear, PolyChain, get_space, make_path
from mcl.paths.lora_math import delta_weight, lora_terms

X = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def tiny_base():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def peft_adapter(tmp_path, name, seed, r=4, alpha=8, **kw):
    """An adapter written by plain peft with random (non-zero) A and B."""
    model = get_peft_model(tiny_base(), LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "down_proj"], **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(tmp_path / name)
    return read_adapter(tmp_path / name)


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    d = tmp_path_factory.mktemp("ad")
    return peft_adapter(d, "a", 1), peft_adapter(d, "b", 2)


def logits(model):
    with torch.no_grad():
        return model(input_ids=X).logits


def reference_logits(state):
    return logits(PeftModel.from_pretrained(tiny_base(), state.path).eval())


def delta_weights(point, space):
    return {t.module: delta_weight(point, t) for t in lora_terms(point, space)}


def merged_delta(state):
    return {t.module: delta_weight(state, t) for t in lora_terms(state, "merged")}


@pytest.mark.parametrize("space", ["factors", "delta", "merged"])
@pytest.mark.parametrize("kind,n_controls", [("linear", 0), ("bezier", 1), ("bezier", 3), ("polychain", 2)])
def test_endpoints_are_exact_in_every_space(ab, space, kind, n_controls):
    a, b = ab
    path = PATHS[kind].on_line(a, b, n_controls, space)
    for t, want in ((0.0, a), (1.0, b)):
        point = path.point(t)
        if space == "factors":
            assert all(torch.equal(point.tensors[k], want.tensors[k]) for k in want.tensors)
        elif space == "merged":
            assert all(torch.equal(point.tensors[m + ".weight"], dw) for m, dw in merged_delta(want).items())
        else:
            for term in lora_terms(want, "delta"):
                r = want.tensors[term.a_key].shape[0]
                blocks = point.tensors[term.b_key].split(r, dim=1)
                s = 2.0  # alpha 8 / r 4
                hit = 0 if want is a else len(blocks) - 1
                assert torch.equal(point.tensors[term.a_key][hit * r:(hit + 1) * r], want.tensors[term.a_key])
                assert torch.equal(blocks[hit], s * want.tensors[term.b_key])
                assert all(not blk.any() for i, blk in enumerate(blocks) if i != hit)


@pytest.mark.parametrize("space", ["factors", "delta", "merged"])
def test_applied_endpoint_matches_plain_peft(ab, space):
    a, b = ab
    path = Linear(a, b, space=space)
    model = tiny_base()
    with path.bind(model) as live:
        for t, state in ((0.0, a), (1.0, b)):
            live.apply(path.point(t))
            torch.testing.assert_close(logits(live.model), reference_logits(state), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("space", ["factors", "delta", "merged"])
def test_binding_is_in_place_and_restores_the_model(ab, space):
    a, b = ab
    model = tiny_base()
    before = logits(model)
    path = Linear(a, b, space=space)
    with path.bind(model) as live:
        ptrs = {k: p.data_ptr() for k, p in live.targets.items()}
        for t in (0.3, 0.7):
            live.apply(path.point(t))
            assert {k: p.data_ptr() for k, p in live.targets.items()} == ptrs
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert torch.equal(logits(model), before)


@pytest.mark.parametrize("b_kw", [
    {"r": 8, "alpha": 4, "use_rslora": True},
    {"r": 2, "alpha": 4, "rank_pattern": {"v_proj": 6}, "alpha_pattern": {"down_proj": 1}},
])
def test_delta_weight_is_linear_in_t_with_different_ranks_and_scales(tmp_path, b_kw):
    a = peft_adapter(tmp_path, "a", 1, r=4, alpha=8)
    b = peft_adapter(tmp_path, "b", 2, **b_kw)
    with pytest.raises(MclError, match="r differs"):
        Linear(a, b, space="factors")
    path = Linear(a, b, space="delta")
    da, db = merged_delta(a), merged_delta(b)
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        got = delta_weights(path.point(t), "delta")
        for m in da:
            torch.testing.assert_close(got[m], (1 - t) * da[m] + t * db[m], atol=1e-6, rtol=1e-5)
    model = tiny_base()
    with path.bind(model) as live:
        live.apply(path.point(1.0))
        torch.testing.assert_close(logits(live.model), reference_logits(b), atol=1e-5, rtol=1e-5)


def test_factors_path_is_not_linear_in_delta(ab):
    a, b = ab
    mid = delta_weights(Linear(a, b).point(0.5), "factors")
    da, db = merged_delta(a), merged_delta(b)
    assert any(not torch.allclose(mid[m], (da[m] + db[m]) / 2, atol=1e-4) for m in da)


@pytest.mark.parametrize("space", ["factors", "delta"])
def test_quadratic_bezier_through_midpoint_is_the_linear_path(ab, space):
    a, b = ab
    mid = get_space(space).combine([a, b], [0.5, 0.5])
    bezier, line = Bezier(a, mid, b, space=space), Linear(a, b, space=space)
    for t in (0.1, 0.5, 0.8):
        got, want = delta_weights(bezier.point(t), space), delta_weights(line.point(t), space)
        for m in want:
            torch.testing.assert_close(got[m], want[m], atol=1e-6, rtol=1e-5)
        if space == "factors":
            for k, v in line.point(t).tensors.items():
                torch.testing.assert_close(bezier.point(t).tensors[k], v, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [Bezier, PolyChain])
def test_control_points_on_the_line_give_the_line(ab, cls):
    a, b = ab
    path, line = cls.on_line(a, b, 3, "factors"), Linear(a, b)
    for t in (0.05, 0.4, 0.75):
        for k, v in line.point(t).tensors.items():
            torch.testing.assert_close(path.point(t).tensors[k], v, atol=1e-6, rtol=1e-5)


def test_polychain_passes_through_its_bends(ab):
    a, b = ab
    bend = get_space("factors").combine([a, b], [0.9, 0.1])
    path = PolyChain(a, bend, b)
    assert all(torch.equal(path.point(0.5).tensors[k], v) for k, v in bend.tensors.items())
    assert path.weights(0.25) == [0.5, 0.5, 0.0]


def test_unknown_names_and_bad_node_counts(ab):
    a, b = ab
    with pytest.raises(MclError, match="unknown interpolation space 'weights'"):
        Linear(a, b, space="weights")
    with pytest.raises(MclError, match="unknown path 'spline'"):
        make_path("spline", [a, b])
    with pytest.raises(MclError, match="exactly 2"):
        Linear(a, a, b)
    with pytest.raises(ValueError):
        Linear(a, b).point(1.5)


@pytest.mark.parametrize("space", ["factors", "delta", "merged"])
def test_combined_points_keep_the_nodes_base_model_id(ab, space):
    """A point built from adapters whose sidecar names the base ('tiny') can join a path with them."""
    import dataclasses

    a, b = (dataclasses.replace(x, meta={**x.meta, "base_model": "tiny"}) for x in ab)
    assert a.base_model != a.config.get("base_model_name_or_path")
    mid = get_space(space).node_on_line(a, b, 0.5)
    assert mid.base_model == "tiny"
    if space != "merged":
        Bezier.on_line(a, b, 1, space=space)  # validates a, control, b together; raised before the fix
