"""A checkpoint pair with a real loss barrier off t = 0.5, built from a SeqFT run on the tiny model.

`build_pair(run, out)` writes two PEFT adapter dirs: `out/a`, the run's first task adapter as it is, and
`out/b`, its second task adapter with factors (−A, −B/4): a quarter of that adapter's ΔW, reached through
sign-flipped factors. The factor-space line between them passes A = 0 near t = 0.5 and B = 0 near t = 0.8,
so on a 3-task run of 60-100 steps the loss rises far above the chord with its peak near t = 0.65 on the
first task (a single broad peak) and on the second (two bumps, the higher one near 0.65).
Used by benchmarks/adaptive_barrier.py and benchmarks/barrier_vs_handwritten.py.
"""

from __future__ import annotations

from pathlib import Path

from mcl.adapters import AdapterState, read_adapter, write_adapter_dir
from mcl.paths.lora_math import lora_terms

STRENGTH = 0.25


def task_dirs(run: Path) -> list[Path]:
    """A run's task adapter dirs in task order."""
    return sorted((run / "tasks").iterdir(), key=lambda d: int(d.name.split("-")[0]))


def flipped(state: AdapterState, strength: float) -> AdapterState:
    """(−A, −strength·B): `strength` times the adapter's ΔW, through sign-flipped factors."""
    tensors = dict(state.tensors)
    for term in lora_terms(state, "factors"):
        tensors[term.a_key] = -state.tensors[term.a_key]
        tensors[term.b_key] = -strength * state.tensors[term.b_key]
    return AdapterState(dict(state.config), tensors, meta=dict(state.meta))


def build_pair(run: Path, out: Path) -> tuple[Path, Path]:
    """Write (a, b) under `out` (once) and return their dirs."""
    first, second = task_dirs(run)[:2]
    a, b = out / "a", out / "b"
    if not (a / "adapter_config.json").is_file():
        write_adapter_dir(read_adapter(first), a)
    if not (b / "adapter_config.json").is_file():
        write_adapter_dir(flipped(read_adapter(second), STRENGTH), b)
    return a, b
