"""On-disk embedding cache keyed by content hash and encoder fingerprint.

SQLite gives us atomic, crash-safe writes (each ``put_many`` is one transaction) in a format
that holds plain float32 bytes, never pickles; every row carries a CRC32 so silent corruption is
detected on read rather than fed to the guard.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import CorruptFileError

__all__ = ["EmbeddingCache"]

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


class EmbeddingCache:
    """Embeddings of one encoder (by fingerprint digest), stored in ``directory``.

    Args:
        directory: folder for ``embeddings.sqlite3`` (created if missing).
        fingerprint: the encoder fingerprint digest; rows of other encoders are never returned.
        dim: embedding dimension, checked on every read.
    """

    def __init__(self, directory: str | os.PathLike[str], fingerprint: str, dim: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(os.fspath(directory), "embeddings.sqlite3")
        self.fingerprint = fingerprint
        self.dim = dim
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(_SCHEMA)
            self._connection.commit()
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(
                f"embedding cache {self.path!r} is not a readable SQLite database ({exc}); "
                "delete it to rebuild the cache"
            ) from exc

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
        if not rows:
            return
        with self._lock, self._connection:
            self._connection.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows
            )

    def __len__(self) -> int:
        with self._lock:
            rows = self._query(
                "SELECT COUNT(*) FROM embeddings WHERE fingerprint = ?", (self.fingerprint,)
            )
        return int(rows[0][0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    def _query(self, sql: str, params: tuple[object, ...]) -> list[Any]:
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
