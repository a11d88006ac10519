"""Image–caption alignment: per-pair cosine, CLIPScore, and summaries (docs/design.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import (
    as_embeddings,
    as_vector,
    check_float,
    check_same_device,
    check_same_dim,
    check_same_rows,
    normalize_rows,
)
from synthguard.functional._common import Result
from synthguard.stats import EmbeddingStats

__all__ = [
    "DEFAULT_QUANTILES",
    "AlignmentSummary",
    "alignment",
    "alignment_summary",
    "clip_score",
]

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class AlignmentSummary(Result):
    """Distribution of per-pair alignment (cosine) over a set of pairs.

    Attributes:
        n: number of pairs.
        mean: mean cosine.
        std: population standard deviation (``ddof=0``).
        quantiles: level -> quantile (linear interpolation, numpy's default).
        threshold: the threshold ``fraction_below`` refers to, if one was given.
        fraction_below: fraction of pairs with cosine strictly below ``threshold``.
        exact: False when quantiles and ``fraction_below`` were read from the histogram of an
            :class:`~synthguard.EmbeddingStats` (resolution: one bin width; mean and std are
            exact either way).
    """

    n: int
    mean: float
    std: float
    quantiles: dict[float, float]
    threshold: float | None = None
    fraction_below: float | None = None
    exact: bool = True


def _pair(img: Any, txt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    u = as_embeddings("img", img)
    v = as_embeddings("txt", txt)
    check_same_dim("img", u, "txt", v)
    check_same_rows("img", u, "txt", v)
    check_same_device("img", u, "txt", v)
    return u, v


def alignment(img: Any, txt: Any) -> torch.Tensor:
    """Per-pair cosine ``a_i = cos(img_i, txt_i)`` (float64, on the inputs' device).

    Args:
        img: ``[n, d]`` image embeddings.
        txt: ``[n, d]`` caption embeddings; row ``i`` describes image ``i``.

    Example:
        >>> alignment(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 1.0]])).tolist()
        [1.0, 0.7071067811865475]
    """
    u, v = _pair(img, txt)
    cos = (normalize_rows("img", u) * normalize_rows("txt", v)).sum(dim=1)
    return cos.clamp_(-1.0, 1.0)  # rounding can push |cos| a hair past 1


def clip_score(img: Any, txt: Any) -> torch.Tensor:
    """Per-pair CLIPScore ``100 · max(cos(img_i, txt_i), 0)`` (torchmetrics' convention).

    ``clip_score(img, txt).mean()`` is the batch CLIPScore torchmetrics reports.

    Example:
        >>> clip_score(torch.eye(2), -torch.eye(2)).tolist()
        [0.0, 0.0]
    """
    return 100.0 * alignment(img, txt).clamp_min(0.0)


def alignment_summary(
    scores: Any,
    *,
    threshold: float | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> AlignmentSummary:
    """Mean, std, quantiles and fraction below a threshold of per-pair alignment.

    Args:
        scores: ``[n]`` per-pair cosines (from :func:`alignment`), or an
            :class:`~synthguard.EmbeddingStats` (exact mean/std from its sums; quantiles and
            fraction below from its fixed-edge histogram, linear within a bin).
        threshold: optional cosine threshold for ``fraction_below``.
        quantiles: quantile levels in ``[0, 1]``.

    Example:
        >>> s = alignment_summary(torch.tensor([0.1, 0.2, 0.3]), threshold=0.25)
        >>> round(s.mean, 6), round(s.fraction_below, 4)
        (0.2, 0.6667)
    """
    levels = [check_float(f"quantiles[{i}]", q, low=0.0, high=1.0) for i, q in enumerate(quantiles)]
    tau = None if threshold is None else check_float("threshold", threshold)
    if isinstance(scores, EmbeddingStats):
        return _summary_from_stats(scores, levels, tau)
    a = as_vector("scores", scores).cpu().numpy()
    if a.size == 0:
        raise InvalidInputError("scores must hold at least 1 value, got 0")
    return AlignmentSummary(
        n=int(a.size),
        mean=float(a.mean()),
        std=float(a.std()),
        quantiles={q: float(v) for q, v in zip(levels, np.quantile(a, levels), strict=True)},
        threshold=tau,
        fraction_below=None if tau is None else float((a < tau).mean()),
    )


def _summary_from_stats(
    stats: EmbeddingStats, levels: list[float], tau: float | None
) -> AlignmentSummary:
    n, total, total_sq = stats.alignment_sums
    if n == 0:
        raise InvalidInputError("scores (EmbeddingStats) must hold at least 1 pair, got 0")
    mean = total / n
    edges_t, counts_t = stats.alignment_histogram
    edges, counts = edges_t.numpy(), counts_t.numpy()
    # Piecewise-linear CDF (mass uniform within each bin) through the cumulative bin counts.
    cdf = np.concatenate([[0.0], np.cumsum(counts) / n])
    quantiles = {q: float(_inverse_cdf(edges, cdf, q)) for q in levels}
    below = None if tau is None else float(np.interp(tau, edges, cdf))
    return AlignmentSummary(
        n=n,
        mean=mean,
        std=math.sqrt(max(total_sq / n - mean * mean, 0.0)),
        quantiles=quantiles,
        threshold=tau,
        fraction_below=below,
        exact=False,
    )


def _inverse_cdf(edges: np.ndarray, cdf: np.ndarray, q: float) -> float:
    """Smallest x with CDF(x) = q on the piecewise-linear CDF (skipping empty bins)."""
    i = int(np.searchsorted(cdf, q, side="left"))
    if i == 0:  # q == 0: the left edge of the first non-empty bin
        i = int(np.searchsorted(cdf, 0.0, side="right"))
        return float(edges[i - 1])
    i = min(i, len(cdf) - 1)
    lo, hi = cdf[i - 1], cdf[i]
    frac = 0.0 if hi == lo else min(max((q - lo) / (hi - lo), 0.0), 1.0)
    return float(edges[i - 1] + frac * (edges[i] - edges[i - 1]))
