"""Hashing helpers: vectorised 64-bit row and id keys (bottom-k sampling) and content digests."""

from __future__ import annotations

import hashlib
import numbers
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import describe

__all__ = ["content_hash", "hash_ids", "hash_rows", "splitmix64"]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (a bijection; numpy arrays wrap modulo 2⁶⁴)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_rows(values: np.ndarray, salt: int) -> np.ndarray:
    """Position-sensitive 64-bit hash of each row of a float64 ``[n, w]`` array."""
    bits = np.ascontiguousarray(values + 0.0).view(np.uint64)  # + 0.0 maps -0.0 to 0.0
    cols = splitmix64(np.arange(bits.shape[1], dtype=np.uint64) + np.uint64(salt))
    return splitmix64(splitmix64(bits ^ cols).sum(axis=1, dtype=np.uint64))


def hash_ids(ids: Any, n: int, seed: int) -> np.ndarray:
    """64-bit keys of sample ids: ints through splitmix64, str/bytes through keyed BLAKE2b."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray) and ids.ndim != 1:
        raise InvalidInputError(f"ids must be 1-D, got {describe(ids)}")
    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if len(values) != n:
        raise InvalidInputError(f"ids must have one entry per row ({n}), got {len(values)}")
    out = np.empty(n, dtype=np.uint64)
    int_pos, int_vals = [], []
    key = (seed % 2**64).to_bytes(8, "little")
    for i, v in enumerate(values):
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            int_pos.append(i)
            int_vals.append(int(v) % 2**64)
        elif isinstance(v, (str, bytes)):
            raw = b"s" + _str_bytes(v) if isinstance(v, str) else b"b" + v
            digest = hashlib.blake2b(raw, digest_size=8, key=key).digest()
            out[i] = np.uint64(int.from_bytes(digest, "little"))
        else:
            raise InvalidInputError(f"ids[{i}] must be an int, str or bytes, got {describe(v)}")
    if int_pos:
        mixed = np.array(int_vals, dtype=np.uint64) ^ splitmix64(np.array([seed], np.uint64))
        out[int_pos] = splitmix64(mixed)
    return out


def _str_bytes(text: str) -> bytes:
    """UTF-8 of ``text``, lone surrogates included: never raises, and distinct strings give
    distinct bytes.

    A non-UTF-8 file or tar member name decoded with ``surrogateescape`` (``os.fsdecode``)
    holds lone surrogates (``"\\udcff"``); ``surrogatepass`` encodes them as their own code
    points, so such an id never collides with a valid one. Valid text hashes exactly as before.
    """
    return text.encode("utf-8", "surrogatepass")


def content_hash(item: Any) -> str:
    """SHA-256 hex digest of an item's exact content, for exact-duplicate detection.

    ``str`` (UTF-8), ``bytes``, numpy arrays and torch tensors (dtype, shape and raw bytes, so
    ``[1, 2]`` as int32 and as float32 differ) are accepted; the type is part of the digest.

    Example:
        >>> content_hash("a cat") == content_hash("a cat") != content_hash(b"a cat")
        True
    """
    digest = hashlib.sha256()
    if isinstance(item, str):
        digest.update(b"str\0" + _str_bytes(item))
    elif isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"bytes\0" + bytes(item))
    elif isinstance(item, (np.ndarray, torch.Tensor)):
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        array = np.ascontiguousarray(array)
        if array.dtype.kind not in "biufc":
            raise InvalidInputError(f"array items must be numeric, got {describe(item)}")
        digest.update(f"array\0{array.dtype.str}\0{array.shape}\0".encode() + array.tobytes())
    else:
        raise InvalidInputError(
            f"items must be str, bytes, numpy arrays or tensors, got {describe(item)}"
        )
    return digest.hexdigest()
