"""Run configuration: one dataclass tree that YAML files, `--key=value` flags and Python calls share.

A resolved config is hashed (sorted JSON) to name its run directory `runs/<name>-<method>-<hash8>`; starting
the same description again resumes what is already on disk (open_lth style).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mcl.adapters.spec import LoraSpec
from mcl.data.text import TextFormat
from mcl.errors import MclError
from mcl.fields import documented
from mcl.io import check_name, sha256_json


@dataclass
class TrainSpec:
    """Optimisation settings shared by every method.

    `epochs_per_task` (TRACE trains by epochs): one number for every task or a list with one per task;
    when set it replaces `steps_per_task` with ceil(epochs × train examples / (batch_size × grad_accum)).
    """

    steps_per_task: int = documented(200, "optimizer steps per task (HF's max_steps counts the whole run; "
                                          "here each task gets this many)")
    epochs_per_task: Any = documented(None, "null, a number, or a list with one per task: train by epochs instead "
                                            "(replaces steps_per_task)")
    batch_size: int = documented(16, "examples per micro-batch per process (HF's per_device_train_batch_size)")
    grad_accum: int = documented(1, "micro-batches per optimizer step (HF's gradient_accumulation_steps)")
    lr: float = documented(1e-3, "peak learning rate of AdamW (HF's learning_rate)")
    lr_schedule: str = documented("cosine", "after the warm-up: cosine (to 10% of lr at the end of each task) | "
                                            "constant")
    warmup: int = documented(20, "linear warm-up steps at the start of each task, then the lr_schedule")
    weight_decay: float = documented(0.0, "AdamW weight decay")
    max_len: int = documented(256, "max tokens per training example; prompts are cut on the left")
    max_grad_norm: float = documented(1.0, "gradient clipping norm")
    mixed_precision: str = documented("no", "no | bf16 | fp16 (GPU): autocast of the forward pass")
    gradient_checkpointing: bool = documented(False, "recompute decoder activations in backward (less memory, "
                                                     "~1.3x time)")
    fsdp: bool = documented(False, "several processes (torchrun): shard base weights, LoRA adapters and AdamW state "
                                   "with torch FSDP2 (fully_shard); false: every process holds the whole model")
    checkpoint_every: int = documented(50, "steps between resume checkpoints (state/); resume is exact, so results "
                                           "do not depend on it", changes_results=False)
    log_every: int = documented(10, "steps between loss reads (progress bar, NaN check, train_log.csv row, tracker); "
                                    "each is a host sync; not part of the run hash", changes_results=False)
    seed: int = documented(0, "seed of LoRA init, data order and dropout")
    log_with: str = documented("", "\"\" | tensorboard | wandb: an accelerate tracker, writing to <run>/logs; not part "
                                   "of the run hash", changes_results=False)
    ignore_memory_check: bool = documented(False, "run on a GPU even when the memory estimate printed at start says "
                                                  "it cannot fit; not part of the run hash", changes_results=False)

    def epochs(self, n_tasks: int) -> list[float] | None:
        """Epochs per task (None: train by `steps_per_task`); MclError when the list does not fit the tasks."""
        e = self.epochs_per_task
        if e is None:
            return None
        values = list(e) if isinstance(e, (list, tuple)) else [e] * n_tasks
        if len(values) != n_tasks:
            raise MclError(f"train.epochs_per_task lists {len(values)} values for {n_tasks} tasks; give one per task "
                           f"or a single number")
        return values

    def phase_steps(self, train_sizes: list[int], task_ids: list[int], processes: int = 1) -> int:
        """Optimizer steps of a phase over `task_ids` (train_sizes: examples per task of the run)."""
        epochs = self.epochs(len(train_sizes))
        if epochs is None:
            return self.steps_per_task * len(task_ids)
        examples = sum(epochs[i] * train_sizes[i] for i in task_ids)
        return max(1, math.ceil(examples / (self.batch_size * processes * self.grad_accum)))


@dataclass
class EvalSpec:
    """What is measured after each task (R matrix)."""

    split: str = documented("eval", "split scored after each task: train | eval | test")
    max_examples: int = documented(200, "examples scored per task (the first N of the split)")
    batch_size: int = documented(32, "examples per evaluation batch (does not change results)", changes_results=False)
    generate: bool = documented(True, "also score the task metric on greedy generations (else the loss only)")


BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
ADDED_KEYS: dict[tuple[str, ...], Any] = {
    ("model_dtype",): "fp32", ("train", "gradient_checkpointing"): False, ("train", "epochs_per_task"): None,
    ("train", "lr_schedule"): "cosine",
    ("train", "fsdp"): False,
}


@dataclass
class RunConfig:
    """A continual-learning run: base model, LoRA, task order, method and its parameters."""

    name: str = documented("run", "run name: the run dir is <runs_dir>/<name>-<method>-<hash>", changes_results=False)
    model: str = documented("tiny", "base model: a named model (tiny, smollm2), an HF dir or a hub id")
    model_dtype: str = documented("fp32", "fp32 | bf16 | fp16: base weights only; LoRA, optimizer state and the slow "
                                          "learner stay fp32")
    tasks: list[str] = documented(help="task order: built-in task names, `mcl-suite` or task dirs",
                                  default_factory=lambda: ["topic", "stance", "arith"])
    method: str = documented("seq", "continual-learning method: seq, er, ewc, agem, mtl, one, olora, ilora, ... "
                                    "(`mcl list` names them all)")
    method_args: dict[str, Any] = documented(help="the method's own parameters (see the method's class in "
                                                  "mcl/train/methods/)", default_factory=dict)
    lora: LoraSpec = documented(help="LoRA settings", default_factory=LoraSpec)
    train: TrainSpec = documented(help="optimisation settings", default_factory=TrainSpec)
    eval: EvalSpec = documented(help="what is scored after each task (the R matrix)", default_factory=EvalSpec)
    text: TextFormat = documented(help="how prompt and answer become tokens", default_factory=TextFormat)
    data_seed: int = documented(0, "unused by the loop (data order and replay follow train.seed); kept in run "
                                   "hashes", changes_results=False)
    runs_dir: str = documented("runs", "where run dirs go; not part of the run hash", changes_results=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict."""
        return dataclasses.asdict(self)

    def run_hash(self, data_hashes: list[str]) -> str:
        """Hash of everything that changes results: the config (not where runs go) and the task data.

        Settings added later are left out at their default, so runs made before them keep their hash:
        `text` when it is the ids join, `method_args.snapshot_every` when 0 or absent.
        """
        d = self.to_dict()
        d.pop("runs_dir")
        d["train"].pop("log_with"), d["train"].pop("log_every")  # how often and where it logs does not change results
        d["train"].pop("ignore_memory_check")  # nor does skipping the memory check
        for keys, default in ADDED_KEYS.items():  # at their defaults, keys added later leave the hash as it was
            node = d
            for k in keys[:-1]:
                node = node[k]
            if node.get(keys[-1]) == default:
                node.pop(keys[-1])
        if self.text.is_default():
            d.pop("text")
        if not d["method_args"].get("snapshot_every"):
            d["method_args"].pop("snapshot_every", None)
        return sha256_json({"config": d, "data": data_hashes})[:8]

    def run_dir(self, data_hashes: list[str], legacy_data_hashes: list[str] | None = None) -> Path:
        """Directory this run uses, `<name>-<method>-<hash>`, given the content hashes of its tasks.

        Runs made before the method was in the name and descriptions were out of the data hash resolve:
        with `legacy_data_hashes`, an existing `<name>-<hash of the legacy data hashes>` dir is returned.
        """
        new = Path(self.runs_dir) / f"{self.name}-{self.method}-{self.run_hash(data_hashes)}"
        if legacy_data_hashes is not None and not new.is_dir():
            old = Path(self.runs_dir) / f"{self.name}-{self.run_hash(legacy_data_hashes)}"
            if old.is_dir():
                return old
        return new


# Hugging Face / PEFT names accepted for mcl's keys, at the top level or in their section; they are resolved to
# the canonical key before anything is hashed, so a run named either way has one hash
ALIASES: dict[str, str] = {
    "learning_rate": "train.lr",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_steps": "train.steps_per_task",
    "num_train_epochs": "train.epochs_per_task",
    "warmup_steps": "train.warmup",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
}
ALL_LINEAR_KEYWORD = "all-linear"  # PEFT's target_modules keyword: every linear layer but the output head


def resolve_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every alias (top level or in its section) moved to its canonical key; MclError when both are set."""
    for alias, canonical in ALIASES.items():
        section, key = canonical.split(".")
        for node, where in ((data, alias), (data.get(section), f"{section}.{alias}")):
            if not isinstance(node, dict) or alias not in node:
                continue
            value = node.pop(alias)
            target = data.setdefault(section, {})
            if not isinstance(target, dict):
                raise MclError(f"config key {section!r} must be a mapping")
            if key in target:
                raise MclError(f"config keys {where} and {canonical} are the same setting ({where} is Hugging Face's "
                               f"name); set one")
            target[key] = value
    return data


def canonical_key(dotted: str) -> str:
    """The mcl key a dotted override names: `learning_rate` and `train.learning_rate` → `train.lr`."""
    section, _, key = dotted.rpartition(".")
    canonical = ALIASES.get(key, "")
    return canonical if canonical and section in ("", canonical.split(".")[0]) else dotted


def _canonical_values(cfg: "RunConfig") -> None:
    """Spellings of one value made one: `target_modules: all-linear` (a string or a one-item list) → "all-linear"."""
    targets = cfg.lora.target_modules
    if isinstance(targets, list) and ALL_LINEAR_KEYWORD in targets:
        if len(targets) > 1:
            raise MclError(f"lora.target_modules: {ALL_LINEAR_KEYWORD} stands alone (got {targets})")
        cfg.lora.target_modules = ALL_LINEAR_KEYWORD


def keys_without_results(obj: Any = None, prefix: str = "") -> set[str]:
    """Dotted keys of settings marked `changes_results=False` (report labels leave them out)."""
    obj = RunConfig() if obj is None else obj
    out = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out |= keys_without_results(value, f"{prefix}{f.name}.")
        elif not f.metadata.get("changes_results", True):
            out.add(f"{prefix}{f.name}")
    return out


def _coerce(value: Any, target: Any, key: str) -> Any:
    if isinstance(target, bool):
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise MclError(f"config key {key}: expected true/false, got {value!r}")
    if isinstance(target, (int, float)):
        if isinstance(value, bool):  # YAML's true is not a count: `steps_per_task: true` would train 1 step
            raise MclError(f"config key {key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise MclError(f"config key {key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise MclError(f"config key {key}: expected a finite number, got {value!r}")
        if isinstance(target, int):
            if not number.is_integer():
                raise MclError(f"config key {key}: expected an integer, got {value!r}")
            return int(value) if isinstance(value, int) else int(number)
        return number
    if key == "train.epochs_per_task" and isinstance(value, str):
        try:
            return [float(v) if "." in v else int(v) for v in value.split(",") if v]
        except ValueError:
            raise MclError(f"config key {key}: expected numbers, got {value!r}") from None
    if isinstance(target, (list, str)) and key == "lora.target_modules":
        target = []
    if isinstance(target, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MclError(f"config key {key}: expected a list of names (strings), got {value!r}")
        return value
    if isinstance(target, str) and not isinstance(value, str):
        raise MclError(f"config key {key}: expected a string, got {value!r}")
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
            if value is not None and not isinstance(value, dict):
                raise MclError(f"config key {full!r} must be a mapping, got {value!r}")
            setattr(obj, key, {**current, **(value or {})})
        else:
            setattr(obj, key, _coerce(value, current, full))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MclError(f"config key {dotted!r}: {'.'.join(parts[:i + 1])} is {node!r}, not a mapping")
    node[parts[-1]] = value


def _check_epochs(value: Any) -> None:
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
               for v in values) or value == []:
        raise MclError(f"train.epochs_per_task must be a positive number or a list of them, one per task "
                       f"(got {value!r})")


@dataclass(frozen=True)
class Range:
    """An allowed interval of a numeric config value, closed at each end unless `open_lo` / `open_hi`."""

    lo: int
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False

    def __contains__(self, x: float) -> bool:
        return (self.lo < x if self.open_lo else self.lo <= x) and (x < self.hi if self.open_hi else x <= self.hi)

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"be {'>' if self.open_lo else '>='} {self.lo}"
        return f"lie in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"


SEEDS = Range(0, 2**32 - 1)  # numpy's and accelerate's set_seed take no more
RANGES: dict[str, Range] = {
    "train.steps_per_task": Range(1), "train.batch_size": Range(1), "train.grad_accum": Range(1),
    "train.lr": Range(0, open_lo=True), "train.warmup": Range(0), "train.weight_decay": Range(0),
    "train.max_len": Range(1), "train.max_grad_norm": Range(0), "train.checkpoint_every": Range(1),
    "train.log_every": Range(1), "train.seed": SEEDS, "data_seed": SEEDS,
    "eval.max_examples": Range(1), "eval.batch_size": Range(1),
    "lora.r": Range(1), "lora.alpha": Range(0, open_lo=True), "lora.dropout": Range(0, 1, open_hi=True),
}


def _get_dotted(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: RunConfig) -> None:
    """Reject values that cannot train (one-line MclError); everything here is known before any model loads."""
    from mcl.train.methods import METHODS

    if cfg.method not in METHODS:
        raise MclError(f"unknown method {cfg.method!r}; choose from {', '.join(sorted(METHODS))}")
    for key, allowed in RANGES.items():
        value = _get_dotted(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value not in allowed:
            raise MclError(f"{key} must {allowed} (got {value!r})")
    check_name(cfg.name, "run name")
    if cfg.eval.split not in ("train", "eval", "test"):
        raise MclError(f"eval.split must be train|eval|test (got {cfg.eval.split!r})")
    if not cfg.lora.target_modules:
        raise MclError("lora.target_modules is empty: name at least one linear layer (e.g. [q_proj, v_proj])")
    if not cfg.tasks:
        raise MclError("tasks must name at least one task")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise MclError(f"tasks contains duplicates: {cfg.tasks}")
    _check_epochs(cfg.train.epochs_per_task)
    if cfg.model_dtype not in ("fp32", "bf16", "fp16"):
        raise MclError(f"model_dtype must be fp32|bf16|fp16 (got {cfg.model_dtype!r})")
    if cfg.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise MclError(f"train.mixed_precision must be no|bf16|fp16 (got {cfg.train.mixed_precision!r})")
    if cfg.train.lr_schedule not in ("cosine", "constant"):
        raise MclError(f"train.lr_schedule must be cosine|constant (got {cfg.train.lr_schedule!r})")
    cfg.text.check()
    METHODS[cfg.method].check_args(cfg.method_args)
    if cfg.train.fsdp and not METHODS[cfg.method].fsdp:
        shardable = ", ".join(name for name, m in METHODS.items() if m.fsdp)
        raise MclError(f"train.fsdp does not support method {cfg.method!r} (its state needs whole tensors); "
                       f"use one of {shardable}, or train.fsdp: false")
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
    """Build a RunConfig from a YAML file, `key=value` overrides (dotted keys) and keyword args.

    Hugging Face's names (`ALIASES`, e.g. learning_rate, lora_alpha) are accepted for mcl's keys.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MclError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise MclError(f"{path}: not UTF-8 text") from None
        except yaml.YAMLError as e:
            raise MclError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise MclError(f"{path}: top level must be a mapping")
    data = resolve_aliases(data)
    for item in overrides or []:
        key, sep, value = item.lstrip("-").partition("=")
        if not sep:
            raise MclError(f"override {item!r} must look like key=value")
        _set_dotted(data, canonical_key(key), yaml.safe_load(value) if value else value)
    for key, value in kwargs.items():
        _set_dotted(data, canonical_key(key), value)
    cfg = RunConfig()
    _update(cfg, data)
    _canonical_values(cfg)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. a saved config.yaml)."""
    cfg = RunConfig()
    _update(cfg, json.loads(json.dumps(data)))
    _canonical_values(cfg)
    return cfg
