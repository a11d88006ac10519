"""On-disk embedding cache keyed by content hash and encoder fingerprint.

SQLite gives us atomic, crash-safe writes (each ``put_many`` is one transaction) in a format
that holds plain float32 bytes, never pickles; every row carries a CRC32 so silent corruption is
detected on read rather than fed to the guard.

The cache only saves time, so it never stops a check: on a read-only mount, a 0444 file or a
0555 folder it is opened read-only (hits served, misses embedded and not stored); a write that
fails (disk full, the mount turned read-only, the database locked past the timeout) stops the
storing. Each case says so once, as a :class:`CacheWarning` naming the file.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import urllib.parse
import warnings
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import CorruptFileError

__all__ = ["CacheWarning", "EmbeddingCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    fingerprint TEXT NOT NULL,
    modality    TEXT NOT NULL,
    key         TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    vector      BLOB NOT NULL,
    crc32       INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, modality, key)
)
"""
_MAX_VARS = 500  # stay below SQLite's bound-parameter limit on old builds
# sqlite3.OperationalError messages that mean "cannot write here", not "corrupt"
_READ_ONLY = ("readonly", "read-only", "unable to open database file")


class CacheWarning(UserWarning):
    """The embedding cache cannot store new embeddings (read-only, disk full); checks go on."""


def _writable(path: str, directory: str) -> bool:
    """Whether this process may write the database file and its folder (for the WAL files).

    ``os.access`` answers for the real ids, and says ``EROFS`` on a read-only mount even to
    root; whatever it misses, the read-write open itself reports and :class:`EmbeddingCache`
    falls back to reading.
    """
    file_ok = not os.path.exists(path) or os.access(path, os.W_OK)
    return file_ok and os.access(directory, os.W_OK)


class EmbeddingCache:
    """Embeddings of one encoder (by fingerprint digest), stored in ``directory``.

    Args:
        directory: folder for ``embeddings.sqlite3`` (created if missing).
        fingerprint: the encoder fingerprint digest; rows of other encoders are never returned.
        dim: embedding dimension, checked on every read.
    """

    def __init__(self, directory: str | os.PathLike[str], fingerprint: str, dim: int) -> None:
        directory = os.fspath(directory)
        self.path = os.path.join(directory, "embeddings.sqlite3")
        self.fingerprint = fingerprint
        self.dim = dim
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        #: why new embeddings are not stored (``None``: they are)
        self.read_only_reason: str | None = None
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            self._stop_storing(f"its folder cannot be created ({exc.strerror or exc})")
            return  # nothing to read either: every embedding is computed
        if _writable(self.path, directory):
            try:
                self._connection = self._open_read_write()
                return
            except sqlite3.OperationalError as exc:
                if not any(text in str(exc).lower() for text in _READ_ONLY):
                    raise self._corrupt(exc) from exc
                reason = f"it cannot be written ({exc})"
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from exc
        else:
            reason = "the file or its folder is read-only"
        self._stop_storing(reason)
        if os.path.exists(self.path):
            self._connection = self._open_read_only()

    def _open_read_write(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            connection.commit()
        except BaseException:
            connection.close()
            raise
        return connection

    def _open_read_only(self) -> sqlite3.Connection | None:
        """``mode=ro``; a WAL database whose folder is read-only (no ``-shm`` can be made)
        needs ``immutable=1`` as well, which is true of it for as long as nobody can write."""
        uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(self.path)))
        last: sqlite3.DatabaseError | None = None
        for flags in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                connection = sqlite3.connect(uri + flags, uri=True, check_same_thread=False)
            except sqlite3.DatabaseError as exc:
                last = exc
                continue
            try:
                tables = connection.execute(
                    "SELECT name FROM sqlite_master WHERE name = 'embeddings'"
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                connection.close()
                last = exc
                continue
            if tables:
                return connection
            connection.close()  # a database nobody ever stored into: nothing to read
            return None
        assert last is not None
        raise self._corrupt(last) from last

    def _corrupt(self, exc: BaseException) -> CorruptFileError:
        return CorruptFileError(
            f"embedding cache {self.path!r} is not a readable SQLite database ({exc}); "
            "delete it to rebuild the cache"
        )

    def _stop_storing(self, reason: str) -> None:
        """Store nothing more, and say so once (``reason`` names what happened)."""
        if self.read_only_reason is not None:
            return
        self.read_only_reason = reason
        warnings.warn(
            f"embedding cache {self.path!r}: {reason}; cached embeddings are still used, new "
            "ones are computed but not stored",
            CacheWarning,
            stacklevel=3,
        )

    def get_many(self, modality: str, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The cached vectors among ``keys`` (missing keys are absent from the result)."""
        found: dict[str, torch.Tensor] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _MAX_VARS):
                chunk = unique[start : start + _MAX_VARS]
                marks = ",".join("?" * len(chunk))
                rows = self._query(
                    "SELECT key, dim, vector, crc32 FROM embeddings "
                    f"WHERE fingerprint = ? AND modality = ? AND key IN ({marks})",
                    (self.fingerprint, modality, *chunk),
                )
                for key, dim, blob, crc in rows:
                    found[key] = self._decode(key, dim, blob, crc)
        return found

    def put_many(self, modality: str, items: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Store vectors in one transaction: after a crash either all or none are there."""
        rows = []
        for key, vector in items:
            blob = vector.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
            rows.append((self.fingerprint, modality, key, self.dim, blob, zlib.crc32(blob)))
        if not rows or self.read_only_reason is not None or self._connection is None:
            return
        with self._lock:
            try:
                with self._connection:
                    self._connection.executemany(
                        "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
            except (sqlite3.OperationalError, OSError) as exc:
                # disk full, the mount turned read-only, locked past the timeout, an I/O error:
                # the embeddings were computed and the check goes on; the rows are rolled back
                full = "full" in str(exc) or getattr(exc, "errno", None) == errno.ENOSPC
                what = "the disk is full" if full else "a write failed"
                self._stop_storing(f"{what} ({exc})")
            except sqlite3.DatabaseError as exc:
                raise CorruptFileError(
                    f"embedding cache {self.path!r} is corrupt ({exc}); delete it to rebuild"
                ) from exc

    def __len__(self) -> int:
        if self._connection is None:
            return 0
        with self._lock:
            rows = self._query(
                "SELECT COUNT(*) FROM embeddings WHERE fingerprint = ?", (self.fingerprint,)
            )
        return int(rows[0][0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()

    def _query(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        if self._connection is None:
            return []
        try:
            return self._connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(
                f"embedding cache {self.path!r} is corrupt ({exc}); delete it to rebuild"
            ) from exc

    def _decode(self, key: object, dim: object, blob: object, crc: object) -> torch.Tensor:
        if not isinstance(blob, bytes) or zlib.crc32(blob) != crc or dim != self.dim:
            raise CorruptFileError(
                f"embedding cache {self.path!r}: entry {key!r} failed its checksum or has the "
                f"wrong dimension (expected {self.dim}); delete the file to rebuild the cache"
            )
        return torch.from_numpy(np.frombuffer(blob, dtype=np.float32).copy())
