"""Duplicates: exact (content hash) and near (cosine >= τ) pairs, within a set or against a
reference (memorisation / copying), blockwise in O(block_size · n) memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import (
    as_embeddings,
    check_float,
    check_same_device,
    check_same_dim,
    describe,
    normalize_rows,
)
from synthguard.functional._common import DEFAULT_BLOCK_SIZE, check_block_size
from synthguard.stats._hashing import content_hash

__all__ = ["content_hash", "exact_duplicates", "near_duplicates"]


def _pairs(chunks: list[torch.Tensor]) -> torch.Tensor:
    if not chunks:
        return torch.zeros(0, 2, dtype=torch.int64)
    return torch.cat(chunks)


def near_duplicates(
    x: Any, threshold: float, y: Any = None, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> torch.Tensor:
    """Index pairs with cosine similarity ``>= threshold``.

    Args:
        x: ``[n, d]`` embeddings (e.g. a synthetic batch).
        threshold: cosine threshold τ in ``[-1, 1]``.
        y: optional ``[m, d]`` reference embeddings. Without it, pairs ``(i, j)`` with
            ``i < j`` within ``x``; with it, pairs ``(i, j)`` of ``x[i]`` and ``y[j]``.
        block_size: rows of ``x`` per block (memory O(block_size · n)).

    Returns:
        ``[p, 2]`` int64 CPU tensor of index pairs in lexicographic order. Cosines are
        float64; for bit-identical rows at τ = 1 prefer :func:`exact_duplicates`, since a
        rounded self-cosine may fall a hair below 1. Every qualifying pair is returned, so a
        fully collapsed set of n rows gives n(n−1)/2 pairs.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.01]])
        >>> near_duplicates(x, 0.99).tolist()
        [[0, 2]]
    """
    tau = check_float("threshold", threshold, low=-1.0, high=1.0)
    block = check_block_size(block_size)
    a = normalize_rows("x", as_embeddings("x", x, min_rows=0))
    b = None
    if y is not None:
        b = normalize_rows("y", as_embeddings("y", y, min_rows=0))
        check_same_dim("x", a, "y", b)
        check_same_device("x", a, "y", b)
    chunks: list[torch.Tensor] = []
    for start in range(0, a.shape[0], block):
        stop = min(start + block, a.shape[0])
        if b is None:
            # Only columns j >= start can pair with rows of this block as (i, j), i < j.
            sims = a[start:stop] @ a[start:].T
            hits = (sims >= tau).triu_(diagonal=1)
            offset_j = start
        else:
            hits = (a[start:stop] @ b.T) >= tau
            offset_j = 0
        found = torch.nonzero(hits).cpu()
        if found.numel():
            chunks.append(found + torch.tensor([start, offset_j]))
    return _pairs(chunks)


def _hashes(name: str, items: Any) -> list[str]:
    if isinstance(items, (torch.Tensor, np.ndarray)):
        if items.ndim < 1:
            raise InvalidInputError(f"{name} must be a sequence or an [n, ...] array")
        return [content_hash(row) for row in items]
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidInputError(f"{name} must be a sequence of items, got {describe(items)}")
    return [content_hash(item) for item in items]


def exact_duplicates(items: Any, reference: Any = None) -> torch.Tensor:
    """Index pairs of items with identical content (SHA-256 of their bytes).

    Args:
        items: a sequence of ``str``, ``bytes``, arrays or tensors (e.g. encoded image files or
            captions), or an ``[n, ...]`` array/tensor whose rows are the items.
        reference: optional reference items of the same kinds.

    Returns:
        ``[p, 2]`` int64 tensor, lexicographic: pairs ``(i, j)``, ``i < j``, within ``items``,
        or with ``reference`` pairs ``(i, j)`` of ``items[i]`` and ``reference[j]``.

    Example:
        >>> exact_duplicates(["a cat", "a dog", "a cat"]).tolist()
        [[0, 2]]
    """
    hashes = _hashes("items", items)
    groups: dict[str, list[int]] = defaultdict(list)
    for j, digest in enumerate(_hashes("reference", reference) if reference is not None else []):
        groups[digest].append(j)
    pairs: list[tuple[int, int]] = []
    if reference is not None:
        for i, digest in enumerate(hashes):
            pairs.extend((i, j) for j in groups.get(digest, ()))
    else:
        for i, digest in enumerate(hashes):
            pairs.extend((j, i) for j in groups[digest])
            groups[digest].append(i)
        pairs.sort()
    if not pairs:
        return torch.zeros(0, 2, dtype=torch.int64)
    return torch.tensor(pairs, dtype=torch.int64)
