"""One writer per output: an exclusive lock file naming its holder (pid and host), released on exit.

`OutputLock(path)` guards a run dir or an `--out` path. Its lock file holds the holder's pid, host, start
time and command; the lock itself is the kernel's `flock` on that file, so it ends with the process however
the process ends (kill -9 included). A second writer gets a one-line MclError naming the holder. A lock
file whose process is gone (same host, no flock held) is taken over, with a line on stderr saying so; one
written on another host is never taken over silently: the message names the file to delete.
The lock file is removed when the holder releases it; mcl leaves nothing behind on success or failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from mcl.errors import MclError


def lock_file_for(path: str | os.PathLike) -> Path:
    """The lock file guarding an output path: `.<name>.lock` beside it (the path itself may not exist yet)."""
    path = Path(path).expanduser().absolute()
    return path.with_name(f".{path.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_holder(fd: int, tries: int = 20) -> dict:
    """The holder record in an open lock file ({} when empty or unreadable after a short wait for its writer)."""
    for _ in range(tries):
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
        except (ValueError, OSError):
            holder = None
        if isinstance(holder, dict):
            return holder
        time.sleep(0.05)
    return {}


class OutputLock:
    """An exclusive lock on one output path (`what` names it in messages), usable as a context manager."""

    def __init__(self, path: str | os.PathLike, what: str | None = None):
        self.path = Path(path)
        self.file = lock_file_for(path)
        self.what = what or str(path)
        self.fd: int | None = None
        self._made: list[Path] = []

    def _make_parents(self) -> None:
        """Create the lock file's missing parent dirs, remembered so that `release` removes them if still empty."""
        missing = []
        d = self.file.parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir()
            self._made.append(d)

    def acquire(self) -> "OutputLock":
        """Take the lock; a live holder is a one-line MclError naming its pid and host."""
        self._make_parents()
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_parents()
                who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                raise MclError(f"{self.what} is in use by {who} (since {holder.get('since', '?')}): wait for it to "
                               "finish or stop it") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.file))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file between our open and our lock: open the new one
        try:
            self._take_over(fd)
        except MclError:
            os.close(fd)
            self._remove_parents()
            raise
        except BaseException:  # e.g. a full disk: the half-written lock file is ours to remove
            self.file.unlink(missing_ok=True)
            os.close(fd)
            self._remove_parents()
            raise
        self.fd = fd
        return self

    def _take_over(self, fd: int) -> None:
        """Write this process's record into the lock file; say so when it names a holder that is gone."""
        host = socket.gethostname()
        old = _read_holder(fd, tries=1)
        if old.get("host") not in (None, host):
            raise MclError(f"{self.what} has a lock file written on host {old.get('host')} by pid {old.get('pid')} "
                           f"({self.file}): if no mcl runs there on it any more, delete that file")
        if old.get("pid") is not None:
            state = "gone" if not (isinstance(old["pid"], int) and _pid_alive(old["pid"])) else "no longer holding it"
            print(f"mcl: took over the lock of {self.what} left by pid {old['pid']} on host {host} (that process is "
                  f"{state})", file=sys.stderr)
        record = {"pid": os.getpid(), "host": host, "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:500]}
        data = json.dumps(record).encode()
        os.ftruncate(fd, 0)
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)

    def _remove_parents(self) -> None:
        for d in reversed(self._made):
            try:
                d.rmdir()
            except OSError:
                break
        self._made = []

    def release(self) -> None:
        """Remove the lock file and drop the lock (then any parent dir the lock made and nothing else filled)."""
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.file)):
                self.file.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        self._remove_parents()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


_HELD: list[OutputLock] = []


def hold_output(path: str | os.PathLike, what: str | None = None) -> None:
    """Lock an output path until `release_held()`, which the CLI calls when a command ends however it ends.

    Under torchrun only rank 0 takes it (the ranks of one command are one writer).
    """
    if int(os.environ.get("RANK", "0")) == 0:
        _HELD.append(OutputLock(path, what).acquire())


def release_held() -> None:
    """Release every lock `hold_output` took, last first."""
    while _HELD:
        _HELD.pop().release()
