"""Interpolation spaces and paths between LoRA adapters — the primitive everything else builds on.

`make_path("linear", [a, b], space="delta").point(t)` gives an adapter state; `path.bind(model)` once,
then `binding.apply(point)` writes it into the live model in place. `fit_curve` trains control points.
`align(nodes, "svd")` puts LoRA factors in one gauge (same ΔW) before factor-space interpolation.
"""

from mcl.paths.align import ALIGNERS, align
from mcl.paths.curves import PATHS, Bezier, InterpolationPath, Linear, PolyChain, make_path, path_class, register_path
from mcl.paths.fit import FitConfig, fit_curve, load_curve, read_curve, save_curve
from mcl.paths.lora_math import content_hash
from mcl.paths.spaces import SPACES, Binding, Space, get_space, lerp_states_, register_space

__all__ = [
    "ALIGNERS", "PATHS", "SPACES", "Bezier", "Binding", "FitConfig", "InterpolationPath", "Linear", "PolyChain", "Space",
    "align", "content_hash", "fit_curve", "get_space", "lerp_states_", "load_curve", "make_path", "path_class",
    "read_curve",
    "register_path", "register_space", "save_curve",
]
