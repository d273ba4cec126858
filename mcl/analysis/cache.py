"""The on-disk cache of evaluated points: one small JSON record per (point, task, evaluation) key.

A key is the SHA-256 of a description holding everything the number depends on: the base model's
fingerprint, the point (path kind, space, node content hashes and t — or plane weights), the task's
data hash and the evaluation settings. Records are written atomically, so an interrupted sweep
leaves only complete records and a repeated one recomputes only what is missing.

A record verifies itself: it carries the SHA-256 of its key and content (`checksum`), and on reading its
fields are checked (types, finite numbers, per-example lists of one length: the task's example count)
before the checksum. A record that fails (edited, truncated, copied under another key, wrongly typed) is
never served: it is recomputed, with one line on stderr naming the file and what was wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import weakref
from pathlib import Path
from typing import Any

import torch

from mcl.io import cache_root, sha256_json, write_json_atomic

CACHE_VERSION = 2  # bump when what a record means changes (loss convention, record fields); 2: checksums


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

    def get(self, key: str, examples: int | None = None) -> dict[str, Any] | None:
        """The record stored under `key` (without its checksum), or None when there is none or it fails its checks
        (said on stderr; the caller recomputes it). `examples`: how many per-example entries it must hold, if any."""
        f = self._file(key)
        try:
            record = json.loads(f.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            problem = f"unreadable ({type(e).__name__})"
        else:
            problem = record_problem(record, key, examples)
        if problem:
            print(f"mcl: sweep cache record {f} is {problem}; recomputing it", file=sys.stderr)
            return None
        return {k: v for k, v in record.items() if k != "checksum"}

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a record atomically, with the checksum of its key and content."""
        write_json_atomic(self._file(key), {**record, "checksum": _checksum(key, record)})


def _checksum(key: str, record: dict[str, Any]) -> str:
    return sha256_json({"key": key, "record": {k: v for k, v in record.items() if k != "checksum"}})


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


FIELD_CHECKS: dict[str, tuple[Any, str]] = {  # field -> (check of its value, what it must be); a registry, in order
    "loss": (_finite, "a finite number"),
    "metric": (lambda v: v is None or _finite(v), "null or a finite number"),
    "metric_name": (lambda v: isinstance(v, str), "a string"),
    "higher_is_better": (lambda v: isinstance(v, bool), "true or false"),
    "example_sums": (lambda v: isinstance(v, list) and all(_finite(x) for x in v), "a list of finite numbers"),
    "example_counts": (lambda v: isinstance(v, list) and all(_finite(x) and x >= 0 for x in v),
                       "a list of counts"),
}
REQUIRED = ("loss", "metric", "metric_name", "higher_is_better", "checksum")


def record_problem(record: Any, key: str, examples: int | None = None) -> str | None:
    """What is wrong with a stored record (None when it is sound): its type, a field's type or value, per-example
    lists of different lengths (or not `examples` long), or a checksum that is not that of its key and content."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, (ok, what) in FIELD_CHECKS.items():
        if name in record and not ok(record[name]):
            return f"wrong: {name} must be {what}"
    if ("example_sums" in record) != ("example_counts" in record):
        return "wrong: example_sums and example_counts come together"
    if "example_sums" in record:
        lengths = {len(record["example_sums"]), len(record["example_counts"])}
        if len(lengths) > 1 or (examples is not None and lengths != {examples}):
            return f"wrong: per-example lists of lengths {sorted(lengths)} for {examples} examples"
    if record["checksum"] != _checksum(key, record):
        return "not what was stored (checksum mismatch)"
    return None


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
