"""p-values, rejection bounds, Holm's step-down procedure and the exact tests.

Resampling p-values are ``(1 + #{null at least as extreme}) / (R + 1)``; every bound is the
value strictly beyond which that p-value is at most the test's level, so a report's
``value``/``bound``/``p_value`` always agree.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from scipy import stats as scipy_stats

__all__ = [
    "Direction",
    "bound_at",
    "duplicate_count_bound",
    "duplicate_count_p",
    "empirical_p",
    "flag_rate_bound",
    "flag_rate_p",
    "flag_rate_test",
    "holm",
]

Direction = Literal["low", "high"]


def empirical_p(null: torch.Tensor, value: float, direction: Direction) -> float:
    """One-sided resampling p-value ``(1 + #{null at least as extreme}) / (R + 1)``."""
    extreme = null <= value if direction == "low" else null >= value
    return (1.0 + float(extreme.sum())) / (null.numel() + 1.0)


def bound_at(null: torch.Tensor, level: float, direction: Direction) -> float | None:
    """The value beyond which :func:`empirical_p` is ``<= level`` (strictly beyond it).

    ``p <= level`` holds iff at most ``c = floor(level·(R+1)) − 1`` null values are as extreme,
    i.e. iff the value is strictly beyond the ``(c+1)``-th most extreme null value. ``None``
    when no value can reach ``level`` with ``R`` resamples.
    """
    c = math.floor(level * (null.numel() + 1) + 1e-9) - 1
    if c < 0:
        return None
    ordered = torch.sort(null, descending=direction == "high").values
    if c >= ordered.numel():
        return math.inf if direction == "low" else -math.inf
    return float(ordered[c])


def holm(
    p_values: list[float], alpha: float, weights: list[float] | None = None
) -> tuple[list[float], list[float], list[bool]]:
    """Holm's step-down procedure, weighted (Holm 1979): per test its level, adjusted p-value
    and rejection.

    Tests are tried in ascending ``p / w``; with ``W`` the total weight of the tests not yet
    tried, the next is tried at ``alpha · w / W``, and testing stops at the first that passes.
    Adjusted p-values ``max_{j<=i} min(1, p_(j) · W_j / w_(j))`` are rejected exactly when
    ``<= alpha``. Equal weights (the default) give the textbook procedure: ``alpha / (K − i)``
    for the test of rank ``i``. The family-wise error rate is at most ``alpha`` for any positive
    weights.

    Example:
        >>> holm([0.004, 0.03], 0.01, weights=[1.0, 3.0])[0]  # levels
        [0.0025, 0.01]
    """
    k = len(p_values)
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or not bool(np.all(np.isfinite(w) & (w > 0))):
        raise ValueError(f"weights must be {k} positive finite numbers; got {weights!r}")
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p / w, kind="stable")
    levels, adjusted, rejected = [0.0] * k, [0.0] * k, [False] * k
    # Integer weights keep ``remaining`` exact, so equal weights give alpha / (K − i) exactly.
    remaining, running = float(w.sum()), 0.0
    for index in order:
        levels[index] = alpha * float(w[index]) / remaining
        running = max(running, min(1.0, float(p[index]) * remaining / float(w[index])))
        adjusted[index] = running
        # p <= level, read off the adjusted p-value so both always agree (no rounding split).
        rejected[index] = running <= alpha
        remaining -= float(w[index])
    return levels, adjusted, rejected


def flag_rate_test(
    flagged: int, total: int, support_flagged: int, support_size: int, level: float
) -> tuple[float, float, float]:
    """Exact one-sided p-value of ``flagged`` of ``total``, the rate bound at ``level`` and
    the null's median rate.

    A fresh real pair fails the calibrated checks with probability ``Beta(U + 1, n − U + 1)``
    (split-conformal, ``U`` of the ``n`` support pairs flagged), so the count is
    ``BetaBinomial(total, U + 1, n − U + 1)``; the test fails when the rate is strictly above
    the returned bound.
    """
    p, median = flag_rate_p(flagged, total, support_flagged, support_size)
    return p, flag_rate_bound(total, support_flagged, support_size, level), median


def flag_rate_p(
    flagged: int, total: int, support_flagged: int, support_size: int
) -> tuple[float, float]:
    """``(p, null median rate)`` of :func:`flag_rate_test`."""
    a, b = support_flagged + 1, support_size - support_flagged + 1
    p = float(scipy_stats.betabinom.sf(flagged - 1, total, a, b))
    return p, float(scipy_stats.betabinom.median(total, a, b)) / total


def flag_rate_bound(total: int, support_flagged: int, support_size: int, level: float) -> float:
    """The rate strictly above which :func:`flag_rate_test` fails at ``level``."""
    a, b = support_flagged + 1, support_size - support_flagged + 1
    # The first k with P(X >= k) <= level, by bisection (the tail falls with k; P(X >= total
    # + 1) = 0): O(log total) tail evaluations, so pools of millions of rows cost the same.
    first, last = 0, total + 1
    while first < last:
        mid = (first + last) // 2
        if float(scipy_stats.betabinom.sf(mid - 1, total, a, b)) <= level:
            last = mid
        else:
            first = mid + 1
    return (first - 1) / total


def duplicate_count_p(
    count: int, rows: int, support_count: int, support_size: int
) -> tuple[float, float]:
    """``(p, null median rate)`` of ``count`` of ``rows`` batch rows having an earlier
    near-duplicate, against ``support_count`` of the ``support_size`` support rows.

    Near-duplicate pairs of real data are rare and each pair of rows is one chance, so the
    counts are Poisson with exposures ``C(rows, 2)`` and ``C(support_size, 2)``; given their
    total, the batch's count is ``Binomial(count + support_count, π)`` with
    ``π = C(rows, 2) / (C(rows, 2) + C(support_size, 2))`` under equal rates (the conditional
    test of two Poisson rates, which accounts for the support's own count being a sample).
    The median is that of ``Poisson(support_count · C(rows, 2) / C(support_size, 2))`` over
    ``rows``.
    """
    batch_pairs, support_pairs = math.comb(rows, 2), math.comb(support_size, 2)
    if rows == 0 or batch_pairs == 0:
        return 1.0, math.nan
    share = batch_pairs / (batch_pairs + support_pairs)
    p = 1.0 if count <= 0 else float(scipy_stats.binom.sf(count - 1, count + support_count, share))
    mean = support_count * batch_pairs / max(support_pairs, 1)
    return p, float(scipy_stats.poisson.median(mean)) / rows if mean else 0.0


def duplicate_count_bound(rows: int, support_count: int, support_size: int, level: float) -> float:
    """The rate strictly above which :func:`duplicate_count_p` is ``<= level`` (``1.0``:
    unreachable). The p-value falls as the count grows, so the first failing count is found
    by bisection."""
    first, last = 0, rows + 1
    while first < last:
        mid = (first + last) // 2
        if duplicate_count_p(mid, rows, support_count, support_size)[0] <= level:
            last = mid
        else:
            first = mid + 1
    return (first - 1) / rows if rows else 1.0
