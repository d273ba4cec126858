"""Curve fitting (Garipov et al. 2018): endpoints fixed, control points trained so the path has low loss.

Each step draws t ~ U(0, 1), applies path.point(t) to the live model in place, takes the caller's loss
there and carries its gradient back to the control points by the chain rule through `point`. The loss
is the caller's (`loss_at(model, step)`, e.g. a batch from several tasks' train data): this module
knows nothing of data or evaluation. t and the data of a step depend only on (seed, step), so a fit
resumed from its atomic checkpoint (control points, optimizer, step) continues exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mcl.adapters import AdapterState, read_adapter, write_adapter_dir
from mcl.errors import MclError
from mcl.io import atomic_path, fitting, load_tensors, read_json_record, recover_swaps, write_json_atomic
from mcl.paths.curves import InterpolationPath, make_path, path_class
from mcl.paths.lora_math import content_hash

CURVE_FILE = "curve.json"
TRAINABLE_SPACES = ("factors", "delta")


@dataclass
class FitConfig:
    """Hyper-parameters of a curve fit (saved beside the checkpoint; a resume must match them)."""

    path: str = "bezier"
    space: str = "factors"
    controls: int = 1
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 25


def sample_t(seed: int, step: int) -> float:
    """The t of one step, a function of (seed, step) only."""
    return float(np.random.default_rng([seed, step, 1]).random())


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"{i}.{name}": v for i, st in sd["state"].items() for name, v in st.items()}
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def _save_checkpoint(out: Path, path: InterpolationPath, opt, step: int, history: list[float], ident: dict) -> None:
    with atomic_path(out / "state") as tmp:
        tmp.mkdir()
        save_file({f"{i}.{k}": v.detach().contiguous() for i, c in enumerate(path.controls) for k, v in c.tensors.items()},
                  tmp / "controls.safetensors")
        tensors, groups = _flat_optimizer(opt)
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "optimizer.safetensors")
        write_json_atomic(tmp / "state.json", {**ident, "step": step, "history": history, "param_groups": groups})


def _resume(out: Path, path: InterpolationPath, opt, ident: dict) -> tuple[int, list[float]]:
    state_dir = out / "state"
    for line in recover_swaps(out):  # a kill during a checkpoint's dir swap
        print(line)
    if not (state_dir / "state.json").is_file():
        return 0, []
    fix = f"restore it, or delete {state_dir} to fit from the start"
    saved = read_json_record(state_dir / "state.json", lambda d: isinstance(d, dict) and isinstance(d.get("step"), int)
                             and isinstance(d.get("history"), list) and isinstance(d.get("param_groups"), list),
                             "{step, history, param_groups, ...}", fix)
    if {k: saved.get(k) for k in ident} != ident:
        raise MclError(f"{out} holds a curve fit of other endpoints or settings; pick another --out or delete it")
    with fitting(state_dir / "controls.safetensors", "this curve", fix) as f, torch.no_grad():
        controls = load_tensors(f)
        for i, c in enumerate(path.controls):
            for k, v in c.tensors.items():
                v.copy_(controls[f"{i}.{k}"])
    with fitting(state_dir / "optimizer.safetensors", "this curve", fix) as f:
        _load_optimizer(opt, load_tensors(f), saved["param_groups"])
    return saved["step"], saved["history"]


def fit_curve(
    a: AdapterState,
    b: AdapterState,
    model: torch.nn.Module,
    loss_at: Callable[[torch.nn.Module, int], torch.Tensor],
    config: FitConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[InterpolationPath, list[float]]:
    """Train the control points of a path a→b; returns the fitted path and the per-step losses.

    With `out_dir`, checkpoints there every `checkpoint_every` steps, resumes from it, and finally
    writes each control point as a PEFT dir `control-<i>` plus `curve.json` (written last).
    """
    config = config or FitConfig()
    if config.space not in TRAINABLE_SPACES:
        raise MclError(f"curve fitting works in {' or '.join(TRAINABLE_SPACES)} space, not {config.space!r}")
    kind = path_class(config.path)
    if kind.max_nodes == 2 or config.controls < 1:
        raise MclError("curve fitting needs a path with control points: --path bezier|polychain and --controls >= 1")
    path = kind.on_line(a, b, config.controls, config.space)
    params = [v.requires_grad_(True) for c in path.controls for v in c.tensors.values()]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    settings = {k: v for k, v in asdict(config).items() if k not in ("steps", "checkpoint_every")}
    ident = {"config": settings, "endpoints": [content_hash(a), content_hash(b)]}
    out = Path(out_dir) if out_dir is not None else None
    start, history = _resume(out, path, opt, ident) if out else (0, [])
    with path.bind(model) as live:
        keys = list(live.targets)
        bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="curve fit", disable=not progress)
        for step in bar:
            point = path.point(sample_t(config.seed, step))
            live.apply(point)
            for p in live.targets.values():
                p.grad = None
            loss = loss_at(live.model, step)
            loss.backward()
            pairs = [(point.tensors[k], live.targets[k].grad.to(point.tensors[k])) for k in keys
                     if point.tensors[k].requires_grad]
            opt.zero_grad(set_to_none=True)
            if pairs:
                torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
                opt.step()
            history.append(loss.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            if out and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                _save_checkpoint(out, path, opt, step + 1, history, ident)
    for v in params:
        v.requires_grad_(False)
    if out:
        save_curve(path, out, {"config": asdict(config), "history": history})
    return path, history


def save_curve(path: InterpolationPath, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write a path's control points as PEFT dirs `control-<i>` and `curve.json` (last) in `out_dir`."""
    out = Path(out_dir)
    a = path.nodes[0]
    meta = {"space": path.space.name, "curve_path": path.name, **({"base_model": a.base_model} if a.base_model else {})}
    names = []
    for i, c in enumerate(path.controls, 1):
        names.append(f"control-{i}")
        write_adapter_dir(AdapterState(c.config, {k: v.detach() for k, v in c.tensors.items()}, meta=meta),
                          out / names[-1])
    write_json_atomic(out / CURVE_FILE, {"path": path.name, "space": path.space.name, "a": path.nodes[0].path,
                                         "b": path.nodes[-1].path, "controls": names, **(extra or {})})
    return out


def read_curve(curve_dir: str | Path) -> dict:
    """The `curve.json` of a fitted curve dir, with `controls` as full dir paths."""
    curve_dir = Path(curve_dir)
    f = curve_dir / CURVE_FILE
    if not f.is_file():
        raise MclError(f"{curve_dir} has no {CURVE_FILE}: not a fitted curve dir (see `mcl curve fit`)")
    info = read_json_record(f, lambda d: isinstance(d, dict) and isinstance(d.get("controls"), list)
                            and all(isinstance(c, str) for c in d["controls"]), "{path, space, a, b, controls: [dir]}",
                            f"fit the curve again (mcl curve fit ... --out {curve_dir})")
    info["controls"] = [str(curve_dir / c) for c in info["controls"]]
    return info


def load_curve(curve_dir: str | Path, a: AdapterState | None = None, b: AdapterState | None = None) -> InterpolationPath:
    """Rebuild a fitted path from its dir (endpoints from `curve.json` unless given)."""
    info = read_curve(curve_dir)
    a = a or read_adapter(info["a"])
    b = b or read_adapter(info["b"])
    return make_path(info["path"], [a, *(read_adapter(c) for c in info["controls"]), b], info["space"])
