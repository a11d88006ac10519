"""The embedding cache never stops a check (issue 16): read-only caches are read, a failing
write (disk full) stops the storing with one warning; a corrupt file is still an error."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import synthguard as sg
import synthguard.encoders._cache as cache_module
from synthguard.encoders import CacheWarning, EmbeddingCache

ROOT = os.geteuid() == 0
_FAST = sg.GuardConfig(batch_tests=())  # per-sample decisions only: no resampled nulls


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _make_read_only(how: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = folder / "embeddings.sqlite3"
    if how == "file_0444":
        db.chmod(0o444)
    elif how == "folder_0555":
        folder.chmod(0o555)
    elif how == "detected":  # what os.access says on a read-only mount (EROFS), even to root
        monkeypatch.setattr(cache_module, "_writable", lambda path, directory: False)
    else:  # the read-write open itself fails with SQLite's real read-only error

        def read_only_open(self: EmbeddingCache) -> sqlite3.Connection:
            uri = f"file:{os.path.abspath(self.path)}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
            connection.execute("CREATE TABLE IF NOT EXISTS x (a)")  # attempt to write a readonly
            return connection

        monkeypatch.setattr(EmbeddingCache, "_open_read_write", read_only_open)


_PERMISSIONS = pytest.mark.skipif(ROOT, reason="root writes files whatever their mode")


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("file_0444", marks=_PERMISSIONS),
        pytest.param("folder_0555", marks=_PERMISSIONS),
        "detected",
        "open_fails",
    ],
)
def test_a_read_only_cache_is_read_and_not_written(
    how: str, digits: Any, reference: sg.Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    writer = sg.load_encoder("bundled:digits", cache_dir=folder)
    first = writer.encode_images(digits.images[300:310])
    writer.close()
    with sqlite3.connect(folder / "embeddings.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _digest(folder)
    _make_read_only(how, folder, monkeypatch)
    try:
        encoder = sg.load_encoder("bundled:digits", cache_dir=folder)
        with pytest.warns(CacheWarning, match="read-only|cannot be written") as caught:
            both = encoder.encode_images(digits.images[300:320])  # 10 hits, 10 misses
        assert len(caught) == 1 and str(folder / "embeddings.sqlite3") in str(caught[0].message)
        assert torch.allclose(both[:10], first)
        assert encoder.cache is not None and encoder.cache.read_only_reason
        assert len(encoder.cache) == 10  # the 10 misses were not stored
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per cache, not once per batch
            guard = sg.Guard(reference, _FAST, encoder=encoder)
            report = guard.check(sg.PairBatch(digits.images[300:330], digits.captions[300:330]))
        assert report.n_samples == 30 and report.n_accepted >= 24
        encoder.close()
    finally:
        folder.chmod(0o755)
        (folder / "embeddings.sqlite3").chmod(0o644)
    after = _digest(folder)
    assert after["embeddings.sqlite3"] == before["embeddings.sqlite3"]


def test_a_read_only_folder_without_a_cache_file_computes_everything(
    digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_writable", lambda path, directory: False)
    encoder = sg.load_encoder("bundled:digits", cache_dir=tmp_path / "empty")
    with pytest.warns(CacheWarning, match="read-only"):
        out = encoder.encode_images(digits.images[:5])
    assert out.shape[0] == 5 and not list((tmp_path / "empty").iterdir())
    bad = tmp_path / "a_file"
    bad.write_text("not a folder")  # a cache folder that cannot be created, even by root
    encoder = sg.load_encoder("bundled:digits", cache_dir=bad / "cache")
    with pytest.warns(CacheWarning, match="cannot be created"):
        assert encoder.encode_images(digits.images[:5]).shape[0] == 5


class _FailingWrites:
    """The cache's connection, with every write failing like ``error``."""

    def __init__(self, inner: sqlite3.Connection, error: Exception) -> None:
        self.inner, self.error, self.writes = inner, error, 0

    def executemany(self, *args: Any) -> None:
        self.writes += 1
        raise self.error

    def __enter__(self) -> Any:
        return self.inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("attempt to write a readonly database"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("disk I/O error"),
    ],
)
def test_a_failing_write_stops_the_storing_not_the_check(
    error: Exception, digits: Any, reference: sg.Reference, tmp_path: Path
) -> None:
    encoder = sg.load_encoder("bundled:digits", cache_dir=tmp_path / "cache")
    assert encoder.cache is not None
    failing = _FailingWrites(encoder.cache._connection, error)  # type: ignore[arg-type]
    encoder.cache._connection = failing  # type: ignore[assignment]
    guard = sg.Guard(reference, _FAST, encoder=encoder)
    batch = sg.PairBatch(digits.images[300:330], digits.captions[300:330])
    with pytest.warns(CacheWarning) as caught:
        report = guard.check(batch)
        again = guard.check(batch)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert str(tmp_path / "cache" / "embeddings.sqlite3") in message
    assert ("disk is full" in message) == ("full" in str(error) or isinstance(error, OSError))
    assert failing.writes == 1  # stopped storing after the first failure
    expected = sg.Guard(reference, _FAST, encoder=sg.load_encoder("bundled:digits")).check(batch)
    assert report.to_dict()["samples"] == expected.to_dict()["samples"]
    assert again.n_accepted == report.n_accepted
    encoder.cache._connection = failing.inner  # type: ignore[assignment]
    assert len(encoder.cache) == 0  # the failed transaction was rolled back


def test_a_corrupt_cache_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "embeddings.sqlite3").write_bytes(b"garbage " * 200)
    with pytest.raises(sg.CorruptFileError, match="delete it"):
        EmbeddingCache(tmp_path, "fp", 4)
    cache_module_writable = cache_module._writable
    try:  # read-only, too: garbage is garbage
        cache_module._writable = lambda path, directory: False  # type: ignore[assignment]
        with pytest.warns(CacheWarning), pytest.raises(sg.CorruptFileError, match="delete it"):
            EmbeddingCache(tmp_path, "fp", 4)
    finally:
        cache_module._writable = cache_module_writable
    cache = EmbeddingCache(tmp_path / "ok", "fp", 4)
    failing = _FailingWrites(cache._connection, sqlite3.DatabaseError("malformed"))  # type: ignore[arg-type]
    cache._connection = failing  # type: ignore[assignment]
    with pytest.raises(sg.CorruptFileError, match="corrupt"):
        cache.put_many("image", [("a", torch.ones(4))])
