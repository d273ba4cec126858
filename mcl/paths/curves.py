"""Paths between adapters (a registry): Linear, Bezier of any order, PolyChain.

A path is a list of nodes (endpoints a, b and any control points between) plus node weights wᵢ(t)
that sum to 1, with w(0) selecting a and w(1) selecting b exactly; the space turns Σ wᵢ·nodeᵢ into
an adapter state. Paths know nothing of training or evaluation (see mcl.paths.fit, mcl.analysis).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch

from mcl.adapters import AdapterState
from mcl.adapters.compat import same_dtype
from mcl.errors import MclError
from mcl.paths.lora_math import content_hash
from mcl.paths.spaces import Binding, Space, get_space


class InterpolationPath:
    """Nodes a, controls…, b in one space; `point(t)` is the adapter state at t ∈ [0, 1]."""

    name: ClassVar[str]
    reference: ClassVar[str]
    max_nodes: ClassVar[int | None] = None

    def __init__(self, *nodes: AdapterState, space: str | Space = "factors"):
        if len(nodes) < 2 or (self.max_nodes and len(nodes) > self.max_nodes):
            wanted = f"exactly {self.max_nodes}" if self.max_nodes else "at least 2"
            raise MclError(f"a {self.name} path takes {wanted} adapters (endpoints and control points), got {len(nodes)}")
        self.nodes = same_dtype(nodes)  # mixed precision (fp32 with fp16/bf16) is combined in the common dtype
        self.space = get_space(space)
        self.space.validate(self.nodes)

    @property
    def controls(self) -> list[AdapterState]:
        """The nodes strictly between the endpoints."""
        return self.nodes[1:-1]

    def weights(self, t: float) -> list[float]:
        """Node weights at t (sum 1; one-hot on a at t=0 and on b at t=1)."""
        raise NotImplementedError

    @staticmethod
    def control_positions(n_controls: int) -> list[float]:
        """Where control points sit on [a, b] so that the path is the straight line."""
        return [i / (n_controls + 1) for i in range(1, n_controls + 1)]

    def point(self, t: float) -> AdapterState:
        """The adapter state at t (differentiable in the control tensors)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        return self.space.combine(self.nodes, self.weights(t))

    def bind(self, model: torch.nn.Module) -> Binding:
        """Bind `model` once; then `binding.apply(path.point(t))` for any t is an in-place copy."""
        return self.space.bind(model, self.point(0.0))

    def spec(self) -> dict[str, Any]:
        """What identifies this path: its kind, space and node content hashes."""
        return {"path": self.name, "space": self.space.name, "nodes": [content_hash(n) for n in self.nodes]}

    @classmethod
    def on_line(cls, a: AdapterState, b: AdapterState, n_controls: int, space: str | Space = "factors"):
        """This kind of path with `n_controls` control points placed on the straight line a→b in `space`."""
        space = get_space(space)
        controls = [space.node_on_line(a, b, s) for s in cls.control_positions(n_controls)]
        return cls(a, *controls, b, space=space)


PATHS: dict[str, type[InterpolationPath]] = {}


def register_path(cls: type[InterpolationPath]) -> type[InterpolationPath]:
    """Class decorator adding a path kind to PATHS under its name."""
    PATHS[cls.name] = cls
    return cls


def path_class(name: str) -> type[InterpolationPath]:
    """The path kind registered under `name`; unknown kinds are a one-line error."""
    if name not in PATHS:
        raise MclError(f"unknown path {name!r}; choose from {', '.join(PATHS)}")
    return PATHS[name]


def make_path(name: str, nodes: Sequence[AdapterState], space: str | Space = "factors") -> InterpolationPath:
    """A path by kind name over `nodes` (a, controls…, b)."""
    return path_class(name)(*nodes, space=space)


@register_path
class Linear(InterpolationPath):
    """The straight line (1−t)·a + t·b."""

    name = "linear"
    reference = "Frankle et al. 2020; Entezari et al. 2022 (linear mode connectivity)"
    max_nodes = 2

    def weights(self, t: float) -> list[float]:
        """[1−t, t]."""
        return [1.0 - t, t]

    def point(self, t: float) -> AdapterState:
        """The space's straight-line point at t (factor space: torch.lerp, as `lerp_states_`)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        return self.space.lerp(self.nodes[0], self.nodes[1], t)


@register_path
class Bezier(InterpolationPath):
    """Bezier curve of order len(nodes)−1 with Bernstein weights C(n,i)·tⁱ·(1−t)ⁿ⁻ⁱ."""

    name = "bezier"
    reference = "Garipov et al. 2018, Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"

    def weights(self, t: float) -> list[float]:
        """Bernstein basis of order n at t."""
        n = len(self.nodes) - 1
        return [math.comb(n, i) * t**i * (1.0 - t) ** (n - i) for i in range(n + 1)]


@register_path
class PolyChain(InterpolationPath):
    """Piecewise-linear path through its bends, placed at equally spaced t."""

    name = "polychain"
    reference = "Garipov et al. 2018 (polygonal chain)"

    def weights(self, t: float) -> list[float]:
        """Linear interpolation between the two nodes around t."""
        segments = len(self.nodes) - 1
        j = min(int(t * segments), segments - 1)
        u = t * segments - j
        w = [0.0] * len(self.nodes)
        w[j], w[j + 1] = 1.0 - u, u
        return w
