"""Atomic file and directory writes, output-path checks, tensor files, content hashing and the cache root.

Outputs go only to regular files or directories: `check_output` refuses anything else (a device
node, a symlink, a file where a dir is expected, a path through a file, an unwritable place) before
any work starts, and `atomic_path` never renames over such a thing. A dir swap killed half-way is
undone by `recover_swaps` on the next start.

Tensor files are read and written here so that every failure names its file: a write that fails
(a full disk) is the OSError with the path, a corrupt or truncated file is a one-line MclError, and a
torch file that holds pickled Python objects beyond plain tensors is refused (`weights_only`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mcl.errors import MclError


def cache_root() -> Path:
    """Root of mcl's cache (models, built data): $MCL_CACHE or ~/.cache/mcl."""
    return Path(os.environ.get("MCL_CACHE", Path.home() / ".cache" / "mcl")).expanduser()


def is_main_process() -> bool:
    """False only in a torch.distributed process other than global rank 0 (which writes what all share)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def check_name(name: object, what: str) -> str:
    """A name that becomes one path component (run, task): no separators, NUL, control chars or leading dot."""
    if (not isinstance(name, str) or not name or len(name) > 128 or name.startswith(".")
            or any(c in name for c in "/\\") or any(ord(c) < 32 for c in name)):
        raise MclError(f"{what} {name!r} is not a safe name: one path component, no '/' or '\\', no leading dot")
    return name


def _refuse_special(dest: Path, kind: str | None) -> None:
    """MclError unless `dest` is absent, a regular file or a real dir (matching `kind` when given)."""
    if dest.is_symlink():
        raise MclError(f"{dest} is a symlink; mcl writes only to regular files and directories (remove it or pick another path)")
    if not dest.exists():
        return
    if not (dest.is_file() or dest.is_dir()):
        raise MclError(f"{dest} is not a regular file or directory (device, pipe or socket); refusing to write there")
    if kind == "dir" and not dest.is_dir():
        raise MclError(f"{dest} exists and is a file; expected a directory")
    if kind == "file" and dest.is_dir():
        raise MclError(f"{dest} is a directory; expected a file path")


def check_output(path: str | os.PathLike, kind: str = "dir") -> Path:
    """Refuse an output path (before any work) that mcl could not or should not write; return it.

    `kind` is "dir" or "file". The path must be absent, or a real dir / regular file of that kind; the
    nearest existing ancestor must be a directory in which a file can be created (probed, then removed).
    """
    dest = Path(path).expanduser()
    if str(path) == "":
        raise MclError("empty output path")
    _refuse_special(dest, kind)
    probe_dir = dest if dest.is_dir() else dest.parent
    while not probe_dir.exists() and not probe_dir.is_symlink():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise MclError(f"cannot write {dest}: {probe_dir} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mcl-write-probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise MclError(f"cannot write {dest}: {e.strerror or e} in {probe_dir}") from None
    return dest


@contextmanager
def naming(dest: str | os.PathLike) -> Iterator[None]:
    """Name `dest` in a write failure that names no file: an OSError without a filename, or a safetensors
    error wrapping one (a full disk is reported as such, not as a corrupt file)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  (anything else passes through unchanged)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(dest)) from None
        if type(e).__name__ == "SafetensorError" and (code := re.search(r"(?:code: |os error )(\d+)", str(e))):
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(dest)) from None
        raise


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest` (file or dir)."""
    dest = Path(dest)
    _refuse_special(dest, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        with naming(dest):
            yield tmp
        _refuse_special(dest, "dir" if tmp.is_dir() else "file")
        if dest.is_dir() and tmp.is_dir():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


STAGING = ".mcl-staging."  # prefix of the dirs `staged_outputs` stages in


def _remove(path: Path) -> None:
    """Remove a file or a directory tree (absent is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged_outputs(out: str | os.PathLike, marker: str, owned: Iterable[str]) -> Iterator[Path]:
    """Yield a staging dir inside `out` for one command's outputs; on success swap them in together.

    The swap removes the completion `marker` first, renames every staged file into `out`, removes the files
    of `owned` (every output this command can write) that this invocation did not write, and renames the
    marker in last: once `out` has its marker it holds one invocation's outputs, never a mix of two. A
    failure before the swap leaves the earlier outputs as they were. Files in `out` that this command never
    writes are kept. The caller holds the lock of `out` (`mcl.lock`), so staging dirs of earlier invocations
    (killed before their swap) are removed too.
    """
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
    try:
        yield stage
        written = {p.name for p in stage.iterdir()}
        for leftover in out.glob(STAGING + "*"):
            if leftover != stage:
                _remove(leftover)
        (out / marker).unlink(missing_ok=True)
        for name in sorted(written - {marker}):
            if (stage / name).is_dir() and (out / name).is_dir():  # a dir output (eval's predictions) is swapped whole
                os.replace(out / name, stage / f".{name}.old")
            os.replace(stage / name, out / name)
        for name in sorted(set(owned) - written):
            _remove(out / name)
        if marker in written:
            os.replace(stage / marker, out / marker)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    """Write `text` to `dest` via a temporary file and a rename."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `dest` atomically."""
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_record(path: str | os.PathLike, valid: Callable[[Any], bool], expected: str, fix: str) -> Any:
    """A JSON record mcl wrote; MclError naming the file (and saying `fix`) when it is unreadable or not `valid`."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        obj = None
    if obj is None or not valid(obj):
        raise MclError(f"{path} is corrupt (expected {expected}): {fix}")
    return obj


def misfit(path: str | os.PathLike, what: str, why: str, fix: str) -> MclError:
    """The one-line error for a file mcl wrote whose content does not fit what reads it."""
    return MclError(f"{path} does not fit {what} ({why}): {fix}")


@contextmanager
def fitting(path: str | os.PathLike, what: str, fix: str) -> Iterator[Path]:
    """Apply a file's content inside: a KeyError, ValueError, TypeError, IndexError or RuntimeError there (a
    missing key, a wrong shape) becomes `misfit`'s one-line MclError naming the file."""
    try:
        yield Path(path)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        raise misfit(path, what, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}", fix) from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of an object's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def recover_swaps(parent: str | os.PathLike) -> list[str]:
    """Undo what kills during `atomic_path`'s dir swaps left in `parent`; say what was done.

    A swap renames `dest` to `.<name>.old-<pid>`, the new dir to `dest`, then removes the old one. A
    kill between the renames leaves no `dest`: the old (complete) dir is put back, and the work since
    it is redone. A kill after them leaves a stale old dir: it is removed. Dirs of a process still
    running are left alone.
    """
    stale: dict[str, list[Path]] = {}
    for old in Path(parent).glob(".*.old-*"):
        name, _, pid = old.name[1:].rpartition(".old-")
        if old.is_dir() and name and not _running(pid):
            stale.setdefault(name, []).append(old)
    done = []
    for name, olds in sorted(stale.items()):
        dest = Path(parent) / name
        if not dest.exists():
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            os.replace(newest, dest)
            olds.remove(newest)
            done.append(f"restored {dest} from {newest.name}, left by a process killed while replacing it")
        for old in olds:
            shutil.rmtree(old)
            done.append(f"removed {old}, left by a killed process")
    return done


def _running(pid: str) -> bool:
    """Whether `pid` (a decimal string) is a live process on this host (unknown strings count as live)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def save_tensors(tensors: dict[str, Any], dest: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with a failed write reported as the OSError naming `dest`."""
    from safetensors.torch import save_file

    with naming(dest):
        save_file(tensors, dest, metadata=metadata)


def load_tensors(path: str | os.PathLike) -> dict[str, Any]:
    """Read a safetensors file; MclError naming the file when it is corrupt or truncated."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError) as e:
        raise MclError(f"{path}: corrupt safetensors file ({(str(e).splitlines() or [repr(e)])[0]})") from None


def save_torch(obj: Any, dest: str | os.PathLike) -> None:
    """`torch.save` of plain tensors and containers; a failed write is the OSError naming `dest`."""
    import torch

    buffer = io.BytesIO()  # torch.save's own write errors carry no errno: write the bytes here
    torch.save(obj, buffer)
    with naming(dest), open(dest, "wb") as f:
        f.write(buffer.getvalue())


def load_torch(path: str | os.PathLike) -> Any:
    """`torch.load(weights_only=True)`; MclError naming the file when it is corrupt or holds Python objects."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        if (found := re.search(r"GLOBAL (\S+)", str(e))) is None:
            raise MclError(f"{path}: corrupt or truncated (not a torch file)") from None
        raise MclError(f"{path}: refused: it holds pickled Python objects ({found.group(1)}), not only tensors, "
                       f"and loading them could run code") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.EINVAL:  # EINVAL: torch reading a truncated file
            raise
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise MclError(f"{path}: corrupt or truncated ({first})") from None
