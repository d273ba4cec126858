"""Run configuration: one dataclass tree that YAML files, `--key=value` flags and Python calls share.

A resolved config is hashed (sorted JSON) to name its run directory `runs/<name>-<hash8>`; starting
the same description again resumes what is already on disk (open_lth style).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mcl.adapters import LoraSpec
from mcl.errors import MclError
from mcl.io import sha256_json


@dataclass
class TrainSpec:
    """Optimisation settings shared by every method."""

    steps_per_task: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    max_len: int = 256
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU)
    checkpoint_every: int = 50
    seed: int = 0
    log_with: str = ""  # "" | tensorboard | wandb (accelerate trackers; not part of the run hash)


@dataclass
class EvalSpec:
    """What is measured after each task (R matrix)."""

    split: str = "eval"
    max_examples: int = 200
    batch_size: int = 32
    generate: bool = True


@dataclass
class RunConfig:
    """A continual-learning run: base model, LoRA, task order, method and its parameters."""

    name: str = "run"
    model: str = "tiny"
    tasks: list[str] = field(default_factory=lambda: ["topic", "stance", "arith"])
    method: str = "seq"
    method_args: dict[str, Any] = field(default_factory=dict)
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    data_seed: int = 0
    runs_dir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict."""
        return dataclasses.asdict(self)

    def run_hash(self, data_hashes: list[str]) -> str:
        """Hash of everything that changes results: the config (not where runs go) and the task data."""
        d = self.to_dict()
        d.pop("runs_dir")
        d["train"].pop("log_with")  # where the log also goes does not change results
        return sha256_json({"config": d, "data": data_hashes})[:8]

    def run_dir(self, data_hashes: list[str]) -> Path:
        """Directory this run writes to, given the content hashes of its tasks."""
        return Path(self.runs_dir) / f"{self.name}-{self.run_hash(data_hashes)}"


def _coerce(value: Any, target: Any, key: str) -> Any:
    if isinstance(target, bool):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise MclError(f"config key {key}: expected true/false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(target, (int, float)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MclError(f"config key {key}: expected a number, got {value!r}") from None
        if isinstance(target, int):
            if not number.is_integer():
                raise MclError(f"config key {key}: expected an integer, got {value!r}")
            return int(number)
        return number
    if isinstance(target, list) and isinstance(value, str):
        return [v for v in value.split(",") if v]
    return value


def _update(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise MclError(f"unknown config key {full!r}; known keys at this level: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MclError(f"config key {full!r} must be a mapping")
            _update(current, value, prefix=f"{full}.")
        elif isinstance(current, dict):
            setattr(obj, key, {**current, **(value or {})})
        else:
            setattr(obj, key, _coerce(value, current, full))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def validate(cfg: RunConfig) -> None:
    """Reject values that cannot train (one-line MclError)."""
    from mcl.train.methods import METHODS

    if cfg.method not in METHODS:
        raise MclError(f"unknown method {cfg.method!r}; choose from {', '.join(sorted(METHODS))}")
    if not (cfg.train.lr > 0 and math.isfinite(cfg.train.lr)):
        raise MclError(f"train.lr must be > 0 (got {cfg.train.lr})")
    for key in ("steps_per_task", "batch_size", "grad_accum", "max_len", "checkpoint_every"):
        if getattr(cfg.train, key) < 1:
            raise MclError(f"train.{key} must be >= 1 (got {getattr(cfg.train, key)})")
    if not cfg.tasks:
        raise MclError("tasks must name at least one task")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise MclError(f"tasks contains duplicates: {cfg.tasks}")
    if cfg.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise MclError(f"train.mixed_precision must be no|bf16|fp16 (got {cfg.train.mixed_precision!r})")
    METHODS[cfg.method].check_args(cfg.method_args)
    _check_tracker(cfg.train.log_with)


TRACKERS = {"tensorboard": "is_tensorboard_available", "wandb": "is_wandb_available"}


def _check_tracker(name: str) -> None:
    """`train.log_with` names an accelerate tracker whose package is installed (or is empty)."""
    if not name:
        return
    if name not in TRACKERS:
        raise MclError(f"train.log_with must be one of {', '.join(TRACKERS)} or empty (got {name!r})")
    import accelerate.utils

    if not getattr(accelerate.utils, TRACKERS[name])():
        raise MclError(f"train.log_with={name} needs the {name} package: pip install {name}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **kwargs: Any) -> RunConfig:
    """Build a RunConfig from a YAML file, `key=value` overrides (dotted keys) and keyword args."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MclError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise MclError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise MclError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        key, sep, value = item.lstrip("-").partition("=")
        if not sep:
            raise MclError(f"override {item!r} must look like key=value")
        _set_dotted(data, key, yaml.safe_load(value) if value else value)
    for key, value in kwargs.items():
        _set_dotted(data, key, value)
    cfg = RunConfig()
    _update(cfg, data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. a saved config.yaml)."""
    cfg = RunConfig()
    _update(cfg, json.loads(json.dumps(data)))
    return cfg
