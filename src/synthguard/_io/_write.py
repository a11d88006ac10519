"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

A write goes to a hidden staging sibling, ``.NAME.TAG.tmp``, renamed over ``NAME`` when
complete. A writer killed mid-write (SIGKILL, power loss) cannot remove its staging file or
folder, so the next write to the same destination does: TAG names the machine (a hash of the
host name and PID namespace), the process id and a random part, and a leftover is stale when
its process is gone (same machine) or when nobody has touched it for :data:`STALE_AFTER_S`
seconds (any machine, and names from before TAG had a process id).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "STALE_AFTER_S",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale",
    "staging_dir",
]

#: A staging file or folder untouched this long is abandoned, whoever made it (one hour: a
#: live writer touches its staging file with every write, a staging folder with every file).
STALE_AFTER_S = 3600.0

#: The TAG of a staging name: ``HOST-PID-RANDOM``, or ``RANDOM`` alone (older versions).
_TAG = re.compile(r"(?:(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-)?[0-9a-f]{32}")


def _host_tag() -> str:
    # The PID namespace is part of "this machine": two containers sharing a volume and a host
    # name still have separate process ids, so neither may judge the other's pids.
    ident = socket.gethostname()
    with contextlib.suppress(OSError):
        ident += f":{os.stat('/proc/self/ns/pid').st_ino}"
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


_HOST = _host_tag()


def _staging_name(target: Path) -> Path:
    return target.parent / f".{target.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex}.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the destination folder (``os.replace`` is atomic only within
    one file system), is flushed to disk before the rename, and is removed if the body raises.
    Stale staging leftovers of earlier, killed writes to ``path`` are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = _staging_name(target)
    # os.open with 0o666 applies the umask, so the file gets the permissions a plain open()
    # would give it (tempfile.mkstemp would make it private, 0o600).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def staging_dir(target: Path) -> Path:
    """A new empty folder beside ``target`` (umask permissions) to build it in before a rename.

    Stale staging leftovers of earlier, killed writes to ``target`` are removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    staging = _staging_name(target)
    staging.mkdir()
    return staging


def clean_stale(target: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Remove the stale staging leftovers of writes to ``target``; returns what was removed.

    Only names of the form ``.NAME.TAG.tmp`` for this exact ``NAME`` are considered (see the
    module docs for when one is stale); anything else in the folder is never touched. Best
    effort: what cannot be listed or removed is left alone.
    """
    target = Path(target)
    prefix, clock = f".{target.name}.", time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        tag = _TAG.fullmatch(name[len(prefix) : -len(".tmp")])
        if tag is None or not _stale(entry, tag, clock):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)  # a symlink is removed, never followed
            removed.append(Path(entry.path))
    return removed


def _stale(entry: os.DirEntry[str], tag: re.Match[str], now: float) -> bool:
    try:
        touched = entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if tag["host"] == _HOST and tag["pid"] is not None and not _alive(int(tag["pid"])):
        return True
    return now - touched > STALE_AFTER_S


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (in doubt: yes, so nothing is removed)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        _write(handle, data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, errors: str = "strict") -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    ``errors="backslashreplace"`` writes a lone surrogate (a non-UTF-8 file or member name
    decoded with ``surrogateescape``) as ``\\udcff`` instead of raising: for pages people read.
    """
    atomic_write_bytes(path, text.encode("utf-8", errors))


def _write(handle: IO[bytes], data: bytes) -> None:
    handle.write(data)
    handle.flush()


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not supported on every platform (e.g. Windows).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
