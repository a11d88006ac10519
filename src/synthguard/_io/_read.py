"""Reading files safely: regular files only, bounded, and kept inside the folder a user named.

Every data file synthguard reads (images, caption files, shards, Parquet files, references,
monitor logs) goes through :func:`read_file` or :func:`open_regular`:

- **regular files only**: a FIFO, a device (``/dev/zero``), a socket or a directory is refused
  after an ``os.stat``, before any ``open``: a FIFO would block ``open`` forever, a device would
  be read until memory runs out. The file is then opened non-blocking (and, when contained, at
  its resolved path without following a final symlink), and ``fstat`` must show the same
  regular file, so a swap between the check and the open is refused too;
- **bounded**: at most ``max_bytes`` are read, whatever the file's size says (``/proc`` files
  claim 0 bytes, a file may grow while it is read);
- **contained**: with a ``root``, the path is resolved (every symlink followed) and must stay
  inside the resolved root, unless the caller opted in with ``follow_symlinks=True``.

:class:`SourceFile` is a path read from a source (a folder's image, a Parquet path value): a
``str``, so it is the path it names everywhere, that carries its root and limits so that
whoever opens it later (the encoder, a writer copying accepted samples) applies them.
:class:`RefusedImage` stands in for an image a source refused; the encoder turns it into a
per-sample reject with its reason code.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import IO, Any

from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIDECAR_BYTES",
    "FileRefusedError",
    "RefusedImage",
    "SourceFile",
    "format_bytes",
    "inside",
    "open_regular",
    "read_file",
]

#: Largest encoded image read from a file, a tar member or a Parquet cell (64 MiB).
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Largest ``captions.jsonl`` / ``captions.csv`` read whole into memory (1 GiB).
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
#: Largest ``.txt`` / ``.json`` / ``.cls`` member of a shard (16 MiB; real ones are kilobytes).
MAX_SIDECAR_BYTES = 16 * 1024 * 1024


class FileRefusedError(InvalidInputError):
    """A file was not read; ``reason`` is the per-sample reason code it maps to for an image.

    ``outside_input`` (it resolves outside the input folder), ``image_too_large`` (more bytes
    than allowed), ``unreadable_image`` (missing, not a regular file, or an OS error).
    """

    def __init__(self, message: str, reason: ReasonCode) -> None:
        super().__init__(message)
        self.reason = reason


def format_bytes(count: int) -> str:
    """``67108864`` -> ``"64 MiB"`` (for messages)."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.4g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def inside(path: str, root: str) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies under it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _target(
    path: str, root: str | os.PathLike[str] | None, follow_symlinks: bool, what: str
) -> str:
    """The path to open: resolved and checked against ``root`` when containment applies."""
    if root is None or follow_symlinks:
        return path
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if not inside(real, real_root):
        raise FileRefusedError(
            f"{what} {path!r} resolves to {real!r}, outside the input folder {real_root!r} "
            "(a symlink leaving it); pass follow_symlinks=True (CLI: --follow-symlinks) to read "
            "it anyway",
            ReasonCode.OUTSIDE_INPUT,
        )
    return real


def open_regular(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    root: str | os.PathLike[str] | None = None,
    follow_symlinks: bool = True,
    max_bytes: int | None = None,
) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file (see the module docs).

    Args:
        path: the file.
        what: what the file is, for messages ("image", "reference file", ...).
        root: the folder the file must stay inside once resolved (``None``: no containment).
        follow_symlinks: with a ``root``, ``True`` skips the containment check.
        max_bytes: refuse a file whose size is larger (checked before opening).

    Raises:
        FileRefusedError: outside ``root``, not a regular file, larger than ``max_bytes``,
            missing or unreadable; the message names the file and why.
    """
    given = os.fspath(path)
    target = _target(given, root, follow_symlinks, what)
    contained = root is not None and not follow_symlinks
    try:
        before = os.stat(target)
    except OSError as exc:
        raise _os_error(what, given, exc) from exc
    if not stat.S_ISREG(before.st_mode):  # never open a FIFO or a device: it may block forever
        raise FileRefusedError(
            f"{what} {given!r} is {_kind(before.st_mode)}, not a regular file",
            ReasonCode.UNREADABLE_IMAGE,
        )
    if max_bytes is not None and before.st_size > max_bytes:
        raise _too_large(what, given, before.st_size, max_bytes)
    # O_NONBLOCK: should the path have become a FIFO since the stat, open returns at once.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if contained:
        flags |= getattr(os, "O_NOFOLLOW", 0)  # resolved: a symlink now is a swap
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefusedError(
                f"{what} {given!r} became a symlink while being opened; refused",
                ReasonCode.OUTSIDE_INPUT,
            ) from exc
        raise _os_error(what, given, exc) from exc
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise FileRefusedError(
                f"{what} {given!r} was replaced while being opened; refused",
                ReasonCode.UNREADABLE_IMAGE,
            )
        if contained and root is not None:
            _check_opened(fd, given, os.path.realpath(root))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_opened(fd: int, given: str, real_root: str) -> None:
    """Where the kernel says the open file is (Linux): a directory of the path swapped for a
    symlink between the resolution and the open would show here."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return  # no /proc: the resolution and O_NOFOLLOW are the check
    if opened.startswith("/") and not inside(opened, real_root):
        raise FileRefusedError(
            f"{given!r} was opened at {opened!r}, outside the input folder {real_root!r}",
            ReasonCode.OUTSIDE_INPUT,
        )


def read_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int | None,
    what: str = "file",
    root: str | os.PathLike[str] | None = None,
    follow_symlinks: bool = True,
) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (``None``: no limit).

    The limit holds for what is read, not only for the size the file reports. Arguments and
    errors as for :func:`open_regular`.
    """
    with open_regular(
        path, what=what, root=root, follow_symlinks=follow_symlinks, max_bytes=max_bytes
    ) as handle:
        try:
            data = handle.read() if max_bytes is None else _read_at_most(handle, max_bytes + 1)
        except OSError as exc:
            raise _os_error(what, os.fspath(path), exc) from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(what, os.fspath(path), None, max_bytes)
    return data


def _read_at_most(handle: IO[bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = handle.read(min(left, 1 << 24))  # bounded chunks: no huge allocation up front
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _too_large(what: str, path: str, size: int | None, max_bytes: int) -> FileRefusedError:
    has = f"has {format_bytes(size)}" if size is not None else "grew while being read to"
    return FileRefusedError(
        f"{what} {path!r} {has} more than max_image_bytes={format_bytes(max_bytes)}"
        if what == "image"
        else f"{what} {path!r} {has} more than the {format_bytes(max_bytes)} allowed",
        ReasonCode.IMAGE_TOO_LARGE,
    )


def _os_error(what: str, path: str, exc: OSError) -> FileRefusedError:
    if isinstance(exc, FileNotFoundError):
        return FileRefusedError(f"{what} {path!r}: file not found", ReasonCode.UNREADABLE_IMAGE)
    return FileRefusedError(
        f"cannot read {what} {path!r}: {exc.strerror or exc}", ReasonCode.UNREADABLE_IMAGE
    )


class SourceFile(str):
    """A file path read from a source, carrying the rules for opening it.

    It is a ``str`` (the path, as before), so ids, suffixes and comparisons are unchanged; what
    opens it through :meth:`read` (the encoder, writers) applies the source's containment and
    size limit at that moment, not only when the source was listed.

    Args:
        path: the file, relative to the working directory or absolute.
        root: the resolved folder it must stay inside.
        follow_symlinks: ``True`` allows a symlink leading outside ``root``.
        max_bytes: the most bytes read (``None``: no limit).
    """

    root: str
    follow_symlinks: bool
    max_bytes: int | None

    def __new__(
        cls,
        path: str | os.PathLike[str],
        root: str | os.PathLike[str],
        follow_symlinks: bool = False,
        max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    ) -> SourceFile:
        self = super().__new__(cls, os.fspath(path))
        self.root = os.fspath(root)
        self.follow_symlinks = bool(follow_symlinks)
        self.max_bytes = max_bytes
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for spawned DataLoader workers or Ray: the rules travel with the path.
        return (SourceFile, (str(self), self.root, self.follow_symlinks, self.max_bytes))

    def read(self) -> bytes:
        """The file's bytes under the source's rules (see :func:`read_file`)."""
        return read_file(
            self, what="image", root=self.root, follow_symlinks=self.follow_symlinks,
            max_bytes=self.max_bytes,
        )  # fmt: skip


@dataclass(frozen=True)
class RefusedImage:
    """The image of a sample a source refused to read (too large, outside the input, ...).

    The sample stays in the batch; the encoder rejects it with ``reason`` and ``detail``.
    """

    reason: ReasonCode
    detail: str

    def __str__(self) -> str:
        return f"<refused image: {self.reason.value}: {self.detail}>"
