"""The on-disk cache of evaluated points: one small JSON record per (point, task, evaluation) key.

A key is the SHA-256 of a description holding everything the number depends on: the base model's
fingerprint, the point (path kind, space, node content hashes and t — or plane weights), the task's
data hash and the evaluation settings. Records are written atomically, so an interrupted sweep
leaves only complete records and a repeated one recomputes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from pathlib import Path
from typing import Any

import torch

from mcl.io import cache_root, sha256_json, write_json_atomic

CACHE_VERSION = 1  # bump when what a record means changes (loss convention, record fields)


class PointCache:
    """Evaluated points under `root` (default: <mcl cache>/sweeps), keyed by their description."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_root() / "sweeps"

    @staticmethod
    def key(description: dict[str, Any]) -> str:
        """The key of a point description (hash of its canonical JSON and the cache version)."""
        return sha256_json({"version": CACHE_VERSION, **description})

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, or None (also for a corrupt or non-finite record: it is recomputed)."""
        try:
            record = json.loads(self._file(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return record if _valid_record(record) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a record atomically."""
        write_json_atomic(self._file(key), record)


def _valid_record(record: Any) -> bool:
    """A record is a dict with a finite float loss and a numeric-or-null metric."""
    if not isinstance(record, dict):
        return False
    loss, metric = record.get("loss"), record.get("metric")
    number = (int, float)
    return (isinstance(loss, number) and not isinstance(loss, bool) and math.isfinite(loss)
            and (metric is None or (isinstance(metric, number) and math.isfinite(metric))))


_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _base_params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Non-LoRA parameters by their plain-model name, sorted."""
    out = []
    for name, p in model.named_parameters():
        if "lora_" not in name:
            out.append((name.removeprefix("base_model.model.").replace(".base_layer.", "."), p))
    return sorted(out, key=lambda x: x[0])


def model_fingerprint(model: torch.nn.Module) -> str:
    """Identity of a base model's weights: config plus every non-LoRA parameter's name, dtype, shape and bytes.

    Hashing the bytes costs one pass over the weights (~20 ms for the tiny model); it is memoised per
    live model object and its tensors' data pointers and in-place version counters, so a changed weight is
    re-hashed.
    """
    params = _base_params(model)
    memo = tuple((name, p.data_ptr(), p._version, tuple(p.shape), str(p.dtype)) for name, p in params)
    if model in _FINGERPRINTS and _FINGERPRINTS[model][0] == memo:
        return _FINGERPRINTS[model][1]
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "name_or_path", "mcl_base", "transformers_version")}
    h = hashlib.sha256(sha256_json({"config": config}).encode())
    with torch.no_grad():
        for name, p in params:
            t = p.detach().contiguous().cpu()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    _FINGERPRINTS[model] = (memo, h.hexdigest())
    return _FINGERPRINTS[model][1]
