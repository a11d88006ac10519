"""Nearest-neighbour primitives of the per-sample checks, blockwise (memory O(block · n))."""

from __future__ import annotations

import math
from typing import Literal

import torch

from synthguard.functional._common import DEFAULT_BLOCK_SIZE, sq_dists

__all__ = ["kth_distance", "max_cosine", "nearest_cosine"]


def max_cosine(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    exclude: Literal["self", "later"] | None = None,
) -> torch.Tensor:
    """``[n]`` largest cosine of each unit row of ``x`` to the rows of ``y`` (default ``x``).

    ``exclude="self"`` skips ``y[i]`` for ``x[i]`` (leave-one-out); ``"later"`` keeps only
    ``j < i`` (an *earlier* row of the same batch). A row with no candidate gets ``-inf``.
    """
    return nearest_cosine(x, y, exclude=exclude)[0]


def nearest_cosine(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    exclude: Literal["self", "later"] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`max_cosine` and ``[n]`` the row of ``y`` reaching it (``-1``: no candidate).

    The report names that row: the earlier sample a near-duplicate repeats, the support image
    a reference copy copies. Ties go to the lowest row (``torch.max``'s choice).
    """
    other = x if y is None else y
    out = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    where = torch.full((x.shape[0],), -1, dtype=torch.int64)
    for start in range(0, x.shape[0], DEFAULT_BLOCK_SIZE):
        stop = min(start + DEFAULT_BLOCK_SIZE, x.shape[0])
        sims = x[start:stop] @ other.T
        if exclude is not None:
            rows = torch.arange(start, stop)[:, None]
            cols = torch.arange(other.shape[0])[None, :]
            sims.masked_fill_(cols == rows if exclude == "self" else cols >= rows, -math.inf)
        if sims.shape[1]:
            best = sims.max(dim=1)
            out[start:stop] = best.values
            found = torch.isfinite(best.values)
            where[start:stop] = torch.where(found, best.indices, torch.full_like(best.indices, -1))
    return out, where


def kth_distance(x: torch.Tensor, support: torch.Tensor, k: int) -> torch.Tensor:
    """``[n]`` Euclidean distance from each row of ``x`` to its k-th nearest support row."""
    s_sq = (support * support).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], DEFAULT_BLOCK_SIZE):
        block = x[start : start + DEFAULT_BLOCK_SIZE]
        d2 = sq_dists(block, support, (block * block).sum(dim=1), s_sq)
        out[start : start + DEFAULT_BLOCK_SIZE] = torch.topk(d2, k, dim=1, largest=False).values[
            :, -1
        ]
    return out.sqrt_()
