"""Diversity of a set of embeddings: total variance, mean pairwise cosine, effective rank, Vendi.

Every function accepts an ``[n, d]`` tensor or array, a :class:`~synthguard.stats.Moments` or an
:class:`~synthguard.EmbeddingStats` (its image moments), and is computed from sums alone: time
O(n·d²), memory O(d²), and exact under merging of statistics (docs/design.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from synthguard._validation import as_embeddings, normalize_rows
from synthguard.functional._common import as_moments
from synthguard.stats import EmbeddingStats, Moments

__all__ = ["effective_rank", "mean_pairwise_cosine", "total_variance", "vendi_score"]


def _exp_entropy(eigenvalues: torch.Tensor) -> float:
    """``exp(H(λ/Σλ))``: the exponential of the Shannon entropy of a spectrum (0 if Σλ = 0)."""
    lam = eigenvalues.clamp_min(0.0)  # rounding leaves tiny negative eigenvalues of PSD matrices
    total = float(lam.sum())
    if total <= 0.0:
        return 0.0
    p = lam[lam > 0] / total
    return math.exp(float(-(p * torch.log(p)).sum()))


def total_variance(x: Any) -> float:
    """Total variance ``tr(Σ)`` (population covariance, ``/n``).

    Example:
        >>> total_variance(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
        1.0
    """
    if isinstance(x, (Moments, EmbeddingStats)):
        return max(float(torch.trace(as_moments("x", x).covariance)), 0.0)
    t = as_embeddings("x", x)  # O(n·d) two-pass form for raw rows
    return float(((t - t.mean(dim=0)) ** 2).sum()) / t.shape[0]


def mean_pairwise_cosine(x: Any) -> float:
    """Mean cosine over all ordered pairs ``i ≠ j``: ``(‖Σx̂‖² − n) / (n(n−1))`` from sums.

    Rows are L2-normalised first; statistics must come from unit-norm rows (encoder output).

    Example:
        >>> mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]))
        0.3333333333333333
    """
    if isinstance(x, (Moments, EmbeddingStats)):
        m = as_moments("x", x, unit=True, min_rows=2)
        n, total, sum_sq_norms = m.count, m.sum, float(torch.trace(m.sum_outer))
    else:  # O(n·d) for raw rows: only the sum of the normalised rows is needed
        u = normalize_rows("x", as_embeddings("x", x, min_rows=2))
        n, total = u.shape[0], u.sum(dim=0)
        sum_sq_norms = float((u * u).sum())
    # Σ‖x̂_i‖² is n for unit rows; using it keeps the formula exact under rounding of norms.
    return (float(total @ total) - sum_sq_norms) / (n * (n - 1))


def effective_rank(x: Any) -> float:
    """Effective rank ``exp(H(λ/Σλ))`` of the covariance spectrum (Roy & Vetterli, 2007).

    Returns 0.0 when the covariance is zero (all rows equal).

    Example:
        >>> round(effective_rank(torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])), 6)
        2.0
    """
    m = as_moments("x", x, min_rows=1)
    return _exp_entropy(torch.linalg.eigvalsh(m.covariance))


def vendi_score(x: Any) -> float:
    """Vendi score with the cosine kernel: ``exp(−Σ λ log λ)``, λ the eigenvalues of ``K/n``.

    Computed exactly through the d×d dual ``X̂ᵀX̂/n`` (same non-zero spectrum as the n×n kernel
    ``K/n = X̂X̂ᵀ/n``; Friedman & Dieng, 2023), or through ``K/n`` itself when ``n < d``. Rows are
    L2-normalised; statistics must come from unit-norm rows. The spectrum is renormalised to
    sum 1, which only absorbs rounding of unit norms.

    Example:
        >>> round(vendi_score(torch.eye(3)), 12)  # three orthogonal samples: three "species"
        3.0
    """
    if isinstance(x, (Moments, EmbeddingStats)):
        m = as_moments("x", x, unit=True)
        return _exp_entropy(torch.linalg.eigvalsh(m.sum_outer / m.count))
    u = normalize_rows("x", as_embeddings("x", x))
    n, d = u.shape
    gram = u @ u.T if n < d else u.T @ u
    return _exp_entropy(torch.linalg.eigvalsh(gram / n))
