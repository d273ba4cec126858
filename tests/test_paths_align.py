"""Gauge alignment: ΔW per module (and so delta space) is unchanged; gauge twins become identical factors."""

import pytest
import torch

from mcl.adapters import AdapterState
from mcl.errors import MclError
from mcl.paths import Linear, get_space
from mcl.paths.align import ALIGNERS, align, balanced_svd
from mcl.paths.lora_math import delta_weight, lora_terms

MODULES = ["q_proj", "v_proj", "up_proj"]
SHAPES = {"q_proj": (16, 16), "v_proj": (16, 16), "up_proj": (32, 16)}


def random_state(seed, r=4):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m in MODULES:
        out, inp = SHAPES[m]
        prefix = f"base_model.model.model.layers.0.mlp.{m}" if m == "up_proj" else f"base_model.model.model.layers.0.self_attn.{m}"
        tensors[prefix + ".lora_A.weight"] = torch.randn(r, inp, generator=g)
        tensors[prefix + ".lora_B.weight"] = torch.randn(out, r, generator=g)
    return AdapterState({"r": r, "lora_alpha": 2 * r, "target_modules": MODULES}, tensors)


def gauge_twin(state, seed):
    """(G·A, B·G⁻¹) per module with a random invertible G: the same ΔW, other factors."""
    g = torch.Generator().manual_seed(seed)
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        r = state.tensors[term.a_key].shape[0]
        gauge = torch.randn(r, r, generator=g, dtype=torch.float64) + 3 * torch.eye(r, dtype=torch.float64)
        tensors[term.a_key] = (gauge @ state.tensors[term.a_key].double()).float()
        tensors[term.b_key] = (state.tensors[term.b_key].double() @ torch.linalg.inv(gauge)).float()
    return AdapterState(dict(state.config), tensors)


def deltas(state):
    return {t.module: delta_weight(state, t) for t in lora_terms(state, "delta")}


@pytest.mark.parametrize("method", list(ALIGNERS))
def test_alignment_keeps_every_module_delta_and_the_delta_space_path(method):
    a, b = random_state(1), random_state(2)
    aligned = align([a, b], method)
    for before, after in zip((a, b), aligned):
        for m, dw in deltas(before).items():
            torch.testing.assert_close(deltas(after)[m], dw, rtol=1e-5, atol=1e-5)
    merged = get_space("merged")
    for t in (0.25, 0.6):
        x, y = merged.combine([a, b], [1 - t, t]), merged.combine(aligned, [1 - t, t])
        for k in x.tensors:
            torch.testing.assert_close(y.tensors[k], x.tensors[k], rtol=1e-5, atol=1e-5)


def test_balanced_svd_form_is_balanced_and_orthogonal():
    a, b = random_state(3).tensors["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"], \
        random_state(3).tensors["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"]
    new_a, new_b = balanced_svd(a, b)
    gram_a, gram_b = new_a @ new_a.T, new_b.T @ new_b
    torch.testing.assert_close(gram_a, gram_b)
    torch.testing.assert_close(gram_a, torch.diag(torch.diagonal(gram_a)))


def test_svd_alignment_turns_a_gauge_twin_into_the_same_factors():
    a = random_state(4)
    twin = gauge_twin(a, 5)
    path = Linear(a, twin, space="factors")
    mid = {t.module: delta_weight(path.point(0.5), t) for t in lora_terms(a, "factors")}
    assert any((mid[m] - dw).abs().max() > 0.1 for m, dw in deltas(a).items())  # the raw factor path leaves ΔW
    x, y = align([a, twin], "svd")
    for k in x.tensors:
        torch.testing.assert_close(y.tensors[k], x.tensors[k], rtol=1e-4, atol=1e-4)


def test_procrustes_undoes_a_sign_flip_and_never_moves_factors_further():
    a, b = random_state(6), random_state(7)
    flipped = AdapterState(a.config, {k: -v for k, v in a.tensors.items()})
    _, back = align([a, flipped], "procrustes")
    for k in a.tensors:
        torch.testing.assert_close(back.tensors[k], a.tensors[k], rtol=1e-5, atol=1e-5)
    _, moved = align([a, b], "procrustes")
    distance = lambda s: sum(float((s.tensors[k] - a.tensors[k]).square().sum()) for k in a.tensors)  # noqa: E731
    assert distance(moved) < distance(b)


def test_unknown_alignment_is_a_one_line_error():
    with pytest.raises(MclError, match="unknown alignment 'qr'"):
        align([random_state(1)], "qr")


def components_state(values, rows):
    """An adapter on one 16×16 module in balanced form: A = √S·V (rows `rows`), B = U·√S, U = [e0, e1, …]."""
    root = torch.tensor(values, dtype=torch.float64).sqrt()
    v = torch.zeros(len(rows), 16, dtype=torch.float64)
    for i, row in enumerate(rows):
        v[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    u = torch.eye(16, len(rows), dtype=torch.float64)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    return AdapterState({"r": len(rows), "lora_alpha": len(rows), "target_modules": ["q_proj"]},
                        {prefix + ".lora_A.weight": root[:, None] * v, prefix + ".lora_B.weight": u * root})


def test_svd_alignment_matches_reordered_near_equal_components_with_their_signs():
    """b holds a's three components with near-equal singular values in a cyclic order (a 3-cycle, not its own
    inverse), and its first component's largest entry changes sign: only the right permutation and sign bring b's
    factors back onto a's."""
    first, second, third = [1.0, -0.999, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.3, 0.0], [0.0, 0.0, -0.3, 1.0, 0.5]
    a = components_state([2.0, 1.99, 1.98], [first, second, third])
    b = components_state([1.98, 2.0, 1.99], [[0.999, -1.0, 0.0, 0.0, 0.0], second, third])
    before = max(float((x - y).abs().max()) for x, y in zip(*(balanced_svd(*s.tensors.values()) for s in (a, b))))
    assert before > 1.0  # canonical forms alone disagree (order and sign)
    x, y = align([a, b], "svd")
    for k in x.tensors:
        torch.testing.assert_close(y.tensors[k], x.tensors[k], rtol=0, atol=0.01)
    for before_state, after in zip((a, b), (x, y)):
        for m, dw in deltas(before_state).items():
            torch.testing.assert_close(deltas(after)[m], dw)
