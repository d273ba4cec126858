"""LoRA gauge alignment (a registry): change factors without changing ΔW before factor-space interpolation.

(A, B) and (G·A, B·G⁻¹) give the same ΔW = s·B·A for any invertible r×r G, so a factor-space path
between two adapters depends on an arbitrary basis per module. An aligner rewrites every node's
factors, module by module, keeping each ΔW (delta and merged space are therefore unchanged):
- `none`: the factors as saved.
- `svd`: the balanced SVD form B = U·√S, A = √S·Vᵀ of B·A (computed through QR of the thin factors,
  never forming ΔW), then each later node's components matched to the first node's by a signed
  permutation (Hungarian assignment on |A·A'ᵀ + BᵀB'|, signs from the matched similarities).
- `procrustes`: each later node rotated onto the first by the orthogonal R that minimises
  ‖A₀ − R·A‖² + ‖B₀ − B·Rᵀ‖² (R = V·Uᵀ from the SVD U·S·Vᵀ of A·A₀ᵀ + BᵀB₀).
`align(nodes, "svd")` returns the rewritten nodes; `ALIGNERS` lists them for `mcl list`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mcl.adapters import AdapterState
from mcl.errors import MclError
from mcl.paths.lora_math import lora_terms

Factors = tuple[torch.Tensor, torch.Tensor]  # (A [r, in], B [out, r])


def balanced_svd(a: torch.Tensor, b: torch.Tensor) -> Factors:
    """(√S·Vᵀ, U·√S) of B·A in float64, signs fixed so each row of A has a positive largest entry."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    root = s.sqrt()
    new_b, new_a = (qb @ u) * root, root[:, None] * (vh @ qa.T)
    sign = torch.sign(new_a.gather(1, new_a.abs().argmax(dim=1, keepdim=True))).squeeze(1)
    sign[sign == 0] = 1.0
    return sign[:, None] * new_a, new_b * sign


def match_signed_permutation(ref: Factors, other: Factors) -> Factors:
    """`other`'s rank components reordered and sign-flipped to best match `ref`'s (same ΔW)."""
    from scipy.optimize import linear_sum_assignment

    sim = ref[0] @ other[0].T + ref[1].T @ other[1]
    rows, cols = linear_sum_assignment(-sim.abs().numpy())
    perm = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]
    sign = torch.sign(sim[torch.arange(len(perm)), perm])
    sign[sign == 0] = 1.0
    return sign[:, None] * other[0][perm], other[1][:, perm] * sign


def procrustes(ref: Factors, other: Factors) -> Factors:
    """`other` rotated by the orthogonal R closest to `ref`: (R·A, B·Rᵀ)."""
    u, _, vh = torch.linalg.svd(other[0] @ ref[0].T + other[1].T @ ref[1])
    r = vh.T @ u.T
    return r @ other[0], other[1] @ r.T


@dataclass(frozen=True)
class Aligner:
    """A named gauge alignment: `canonical` maps every node's factors, `match` maps later nodes onto the first."""

    name: str
    description: str
    canonical: Callable[[torch.Tensor, torch.Tensor], Factors] | None
    match: Callable[[Factors, Factors], Factors] | None


ALIGNERS: dict[str, Aligner] = {
    x.name: x
    for x in [
        Aligner("none", "factors as saved (the gauge each training run happened to end in)", None, None),
        Aligner("svd", "balanced SVD form B = U√S, A = √SVᵀ per module, components matched by signed permutation",
                balanced_svd, match_signed_permutation),
        Aligner("procrustes", "each node rotated onto the first by orthogonal Procrustes per module", None, procrustes),
    ]
}


def get_aligner(name: str) -> Aligner:
    """An aligner by name; unknown names are a one-line error."""
    if name not in ALIGNERS:
        raise MclError(f"unknown alignment {name!r}; choose from {', '.join(ALIGNERS)}")
    return ALIGNERS[name]


def align(nodes: Sequence[AdapterState], method: str = "svd") -> list[AdapterState]:
    """The nodes with factors put in `method`'s gauge, module by module; every module's ΔW is unchanged."""
    aligner = get_aligner(method)
    if aligner.canonical is None and aligner.match is None:
        return list(nodes)
    node_terms = [lora_terms(n, f"{method} alignment") for n in nodes]
    out = [dict(n.tensors) for n in nodes]
    for i, term in enumerate(node_terms[0]):
        factors = []
        for n, terms in zip(nodes, node_terms):
            a, b = n.tensors[terms[i].a_key].double(), n.tensors[terms[i].b_key].double()
            factors.append(aligner.canonical(a, b) if aligner.canonical else (a, b))
        if aligner.match:
            factors = [factors[0], *(aligner.match(factors[0], f) for f in factors[1:])]
        for k, (n, terms, (a, b)) in enumerate(zip(nodes, node_terms, factors)):
            out[k][terms[i].a_key] = a.to(n.tensors[terms[i].a_key].dtype)
            out[k][terms[i].b_key] = b.to(n.tensors[terms[i].b_key].dtype)
    return [AdapterState(dict(n.config), t, path=n.path, meta=dict(n.meta)) for n, t in zip(nodes, out)]
