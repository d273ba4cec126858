"""Offline text sources shared by the tiny model's pretraining corpus and the built-in suite.

The Python standard library is split once, deterministically, by a hash of each file's relative
path: `pretrain` files feed the tiny model's pretraining, `heldout` files its held-out loss, and
`task` files are reserved for the suite's code task, so no suite example was seen in pretraining.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Literal

Split = Literal["pretrain", "heldout", "task"]


def stdlib_root() -> Path:
    """Directory of this interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _bucket(rel: str) -> int:
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 20


def stdlib_files(split: Split) -> list[Path]:
    """Sorted stdlib .py files of one split (task: 10%, heldout: 5%, pretrain: the rest)."""
    root = stdlib_root()
    out = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if "site-packages" in rel or rel.startswith(("pydoc_data/", "idlelib/", "lib2to3/tests/data")):
            continue
        b = _bucket(rel)
        which = "task" if b < 2 else "heldout" if b == 2 else "pretrain"
        if which == split:
            out.append(f)
    return out


def read_text(path: Path) -> str:
    """Read a source file as UTF-8, replacing undecodable bytes."""
    return path.read_bytes().decode("utf-8", errors="replace")
