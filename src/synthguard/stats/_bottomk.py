"""The bottom-k sample of :class:`~synthguard.EmbeddingStats`: keys, order, packing.

A row's key is ``hash(id, seed)`` (or a hash of its content and the seed without ids); the
sample keeps the ``k`` rows with the smallest ``(key, tiebreak)``, the tiebreak being a content
hash, so the order is total and the sample of a merge equals the one-pass sample exactly.
Packed samples carry rows as their exact float64 bits, for collectives and torchmetrics state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthguard.stats._hashing import hash_ids, hash_rows, splitmix64

__all__ = ["Sample", "bottom_k", "pack", "sample_keys", "unpack"]

#: ``(rows [n, d] float64, keys [n], tiebreaks [n], labels [n])``; labels are -1 where none.
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def sample_keys(
    seed: int, img: torch.Tensor | None, txt: torch.Tensor | None, lab: torch.Tensor | None,
    ids: Any, n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(keys, tiebreaks, labels)`` of a batch's rows."""
    content = np.full(n, seed, dtype=np.uint64)
    parts = [img, txt, None if lab is None else lab[:, None].double()]
    for salt, part in enumerate(parts, start=1):
        if part is not None:
            content = splitmix64(content ^ hash_rows(part.cpu().numpy(), salt))
    keys = content if ids is None else hash_ids(ids, n, seed)
    labels = lab if lab is not None else torch.full((n,), -1, dtype=torch.int64)
    return _to_int63(keys), _to_int63(content), labels


def bottom_k(sample: Sample, k: int) -> Sample:
    """The ``k`` rows of smallest ``(key, tiebreak)``, in that order."""
    rows, keys, tiebreak, labels = sample
    order = torch.from_numpy(np.lexsort((tiebreak.numpy(), keys.numpy()))[:k])
    return rows[order].contiguous(), keys[order], tiebreak[order], labels[order]


def pack(samples: Sequence[Sample], k: int, d: int) -> torch.Tensor:
    """``[len(samples), k, d + 4]`` int64: rows as bits, key, tiebreak, label, a valid flag."""
    out = torch.zeros(len(samples), k, d + 4, dtype=torch.int64)
    for m, (rows, keys, tiebreak, labels) in enumerate(samples):
        n = rows.shape[0]
        out[m, :n, :d] = rows.contiguous().view(torch.int64)
        out[m, :n, d], out[m, :n, d + 1], out[m, :n, d + 2] = keys, tiebreak, labels
        out[m, :n, d + 3] = 1
    return out


def unpack(parts: Sequence[torch.Tensor], m: int, d: int) -> Sample:
    """Every valid row of sample ``m`` of packed ``parts``, unordered."""
    rows = torch.cat([p[m][p[m][:, d + 3] == 1] for p in parts])
    return (
        rows[:, :d].contiguous().view(torch.float64),
        rows[:, d].contiguous(),
        rows[:, d + 1].contiguous(),
        rows[:, d + 2].contiguous(),
    )


def _to_int63(hashes: np.ndarray) -> torch.Tensor:
    """uint64 hashes as non-negative int64 (torch sorts and saves int64, not uint64)."""
    return torch.from_numpy((hashes >> np.uint64(1)).astype(np.int64))
