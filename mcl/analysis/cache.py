"""The on-disk cache of evaluated points: one small JSON record per (point, task, evaluation) key.

A key is the SHA-256 of a description holding everything the number depends on: the base model's
fingerprint, the point (path kind, space, node content hashes and t — or plane weights), the task's
data hash and the evaluation settings. Records are written atomically, so an interrupted sweep
leaves only complete records and a repeated one recomputes only what is missing.
"""

from __future__ import annotations

import json
import os
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
        """The record stored under `key`, or None."""
        try:
            return json.loads(self._file(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a record atomically."""
        write_json_atomic(self._file(key), record)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Identity of a base model's weights: config plus each non-LoRA parameter's name, dtype, shape and sums."""
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "name_or_path", "mcl_base", "transformers_version")}
    params = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            x = p.detach().double()
            params.append([name, str(p.dtype), list(p.shape), float(x.sum()), float((x * x).sum())])
    return sha256_json({"config": config, "params": sorted(params)})
