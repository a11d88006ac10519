"""One writer per file: an exclusive lock on a ``.NAME.lock`` file beside it.

The lock is on a separate file because the data file is replaced by every atomic write (a new
inode each time), so a lock on it would not outlive the first write. ``flock`` locks belong to
an open file description: a second lock from the same process is refused like one from another
process, and the kernel drops the lock when its process dies, so a killed writer never leaves a
stale lock behind. The lock file is removed on release, while still locked; whoever opened it
just before checks after locking that it is still the file at that path, and retries if not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import weakref
from pathlib import Path

from synthguard._errors import InvalidInputError

__all__ = ["WriterLock"]


class WriterLock:
    """Hold the exclusive lock of ``target`` until :meth:`release` or garbage collection.

    Args:
        target: the file guarded.
        owner: what holds it, for the message a second writer gets ("CollapseMonitor").

    Raises:
        InvalidInputError: another writer (this process or another) holds the lock; the
            message names the file and the holder's process id.
    """

    def __init__(self, target: str | os.PathLike[str], *, owner: str) -> None:
        target = Path(target)
        self.path = target.parent / f".{target.name}.lock"
        fd = _acquire(self.path, target, owner)
        # A finalizer, not __del__: it runs once, at collection or at interpreter exit, and
        # holds no reference to this object.
        self._finalizer = weakref.finalize(self, _release, fd, str(self.path), os.getpid())

    @property
    def held(self) -> bool:
        """Whether the lock is still held by this object."""
        return self._finalizer.alive

    def release(self) -> None:
        """Release the lock (idempotent)."""
        self._finalizer()


def _acquire(path: Path, target: Path, owner: str) -> int:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no inter-process lock to take
        return -1
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise InvalidInputError(
                    f"{str(target)!r} is already open for writing by another {owner} "
                    f"({holder}); two writers would overwrite each other's records: close the "
                    f"other one first (close() or a with block)"
                ) from exc
            raise InvalidInputError(
                f"cannot lock {str(path)!r} to write {str(target)!r}: {exc.strerror or exc}"
            ) from exc
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # released and removed by its holder between our open and lock: retry
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return fd


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid, _, host = os.pread(fd, 200, 0).decode().strip().partition(" ")
        if pid:
            return f"process {pid} on {host}" if host else f"process {pid}"
    return "a process that is still starting"


def _release(fd: int, path: str, pid: int) -> None:
    if fd < 0 or os.getpid() != pid:  # a forked child does not own its parent's lock
        return
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still locked: see the module docs
    with contextlib.suppress(OSError):
        os.close(fd)
