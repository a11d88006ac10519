"""Calibration on real data: per-sample thresholds and the batch tests' null distributions.

Per sample (DESIGN.md §5): every check turns a sample into a *badness* score (larger is worse):
``-alignment``, the k-NN distance to the reference support, the largest cosine to a reference
image, and, with labels, ``-P(given label)`` when the frozen model disagrees. On the reference
support the scores are leave-one-out, so a held-out real sample is exchangeable with them. The
thresholds are the upper order statistics of each column at one common tail count ``r``, the
largest for which the *union* of the checks flags at most a fraction α of the real samples:
the calibrated false-reject rate of the whole per-sample gate, not of each check alone.

Per batch, three kinds of test:

- *Distribution* tests on the accepted pairs (what would be trained on): each compares the
  batch with the reference pairs that pass the same per-sample checks (a shift, a ratio, a
  distance), so both sides are truncated alike. Their null comes from real-vs-real resamples
  of those accepted support pairs, at the same size; a resample is compared with them
  *without* its own rows (sums subtracted exactly; k-NN balls and
  the CMMD sample exclude them), so the null has the spread of a two-sample comparison of sizes
  ``m`` and ``n − m``: slightly wider than a fresh batch against all ``n`` rows (conservative),
  never narrower, as resampling a one-sample statistic would be (by the finite-population
  factor ``1 − m/n``).
- The *duplicate rate* among all embeddable rows, against resamples of the whole support.
- The *flag rate* (share of samples failing any per-sample check or unembeddable), with an
  exact beta-binomial p-value: a fresh real pair fails the calibrated checks with probability
  ``Beta(U + 1, n − U + 1)`` (split-conformal, ``U`` the support pairs flagged).

Resampling p-values are ``(1 + #{null as extreme}) / (R + 1)``; the family is combined with
Holm's step-down correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import stats as scipy_stats

from synthguard.functional import frechet_distance, vendi_score
from synthguard.functional._common import sq_dists
from synthguard.functional.mmd import CMMD_SCALE
from synthguard.stats import Moments

__all__ = [
    "BATCH_TESTS",
    "RESAMPLED_TESTS",
    "BatchContext",
    "SampleCalibration",
    "batch_null",
    "batch_values",
    "bound_at",
    "duplicate_rate",
    "empirical_p",
    "flag_rate_test",
    "holm",
    "kth_distance",
    "max_cosine",
    "rbf_kernel",
]

Direction = Literal["low", "high"]

#: The batch tests, in report order, with the tail that signals collapse risk.
BATCH_TESTS: dict[str, Direction] = {
    "alignment_shift": "low",
    "variance_ratio": "low",
    "vendi_ratio": "low",
    "coverage": "low",
    "frechet_distance": "high",
    "cmmd": "high",
    "duplicate_rate": "high",
    "flag_rate": "high",
}
#: The tests whose null is resampled (all but the flag rate, which is exact).
RESAMPLED_TESTS = tuple(name for name in BATCH_TESTS if name != "flag_rate")
_BLOCK = 1024


# -- per-sample scores ----------------------------------------------------------------------


def max_cosine(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    exclude: Literal["self", "later"] | None = None,
) -> torch.Tensor:
    """``[n]`` largest cosine of each unit row of ``x`` to the rows of ``y`` (default ``x``).

    ``exclude="self"`` skips ``y[i]`` for ``x[i]`` (leave-one-out); ``"later"`` keeps only
    ``j < i`` (an *earlier* row of the same batch). A row with no candidate gets ``-inf``.
    Blockwise: memory O(block · len(y)).
    """
    other = x if y is None else y
    out = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    for start in range(0, x.shape[0], _BLOCK):
        stop = min(start + _BLOCK, x.shape[0])
        sims = x[start:stop] @ other.T
        if exclude is not None:
            rows = torch.arange(start, stop)[:, None]
            cols = torch.arange(other.shape[0])[None, :]
            sims.masked_fill_(cols == rows if exclude == "self" else cols >= rows, -math.inf)
        if sims.shape[1]:
            out[start:stop] = sims.max(dim=1).values
    return out


def kth_distance(x: torch.Tensor, support: torch.Tensor, k: int) -> torch.Tensor:
    """``[n]`` Euclidean distance from each row of ``x`` to its k-th nearest support row."""
    s_sq = (support * support).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for start in range(0, x.shape[0], _BLOCK):
        block = x[start : start + _BLOCK]
        d2 = sq_dists(block, support, (block * block).sum(dim=1), s_sq)
        out[start : start + _BLOCK] = torch.topk(d2, k, dim=1, largest=False).values[:, -1]
    return out.sqrt_()


@dataclass(frozen=True)
class SampleCalibration:
    """Leave-one-out badness scores of the real support, one column per per-sample check."""

    names: tuple[str, ...]
    badness: torch.Tensor  # [s, T] float64, larger is worse; -inf where a check cannot fire

    def tail_count(self, alpha: float) -> int:
        """Largest ``r`` whose thresholds flag at most ``alpha · s`` support samples in union."""
        s = self.badness.shape[0]
        low, high = 0, s  # union_count is non-decreasing in r
        while low < high:
            mid = (low + high + 1) // 2
            if self._union_count(mid) <= alpha * s:
                low = mid
            else:
                high = mid - 1
        return low

    def thresholds(self, alpha: float) -> dict[str, float]:
        """Per check: flag a sample when its badness is strictly above this value."""
        r = self.tail_count(alpha)
        return {name: self._threshold(t, r) for t, name in enumerate(self.names)}

    def flags(self, alpha: float, only: tuple[str, ...] | None = None) -> torch.Tensor:
        """``[s]`` bool: support samples the calibrated checks flag (leave-one-out).

        ``only`` counts the flags of those checks alone (thresholds stay the joint ones).
        """
        thr = self.thresholds(alpha)
        names = self.names if only is None else only
        limits = torch.tensor([thr[n] for n in names], dtype=torch.float64)
        columns = [self.names.index(n) for n in names]
        return (self.badness[:, columns] > limits).any(dim=1)

    def select(self, names: tuple[str, ...]) -> SampleCalibration:
        """The calibration of a subset of the checks (the union is recalibrated over them)."""
        columns = [self.names.index(name) for name in names]
        return SampleCalibration(names=names, badness=self.badness[:, columns])

    def p_values(self, name: str, badness: torch.Tensor) -> torch.Tensor:
        """Conformal p-values ``(1 + #{support badness >= b}) / (s + 1)`` of new scores."""
        column = torch.sort(self.badness[:, self.names.index(name)]).values
        s = column.shape[0]
        at_least = s - torch.searchsorted(column, badness.contiguous(), right=False)
        return (1.0 + at_least.double()) / (s + 1.0)

    def _threshold(self, t: int, r: int) -> float:
        column = torch.sort(self.badness[:, t], descending=True).values
        return math.inf if r == 0 else float(column[min(r, column.shape[0]) - 1])

    def _union_count(self, r: int) -> int:
        # Flag strictly above the r-th largest value of each column; ties at it stay unflagged.
        limits = torch.tensor([self._threshold(t, r) for t in range(len(self.names))])
        return int((self.badness > limits.double()).any(dim=1).sum())


# -- batch metrics --------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchContext:
    """What the batch metrics need from the reference (all float64 unit rows on CPU)."""

    moments: Moments  # image moments of the accepted support rows (the comparison set)
    align_sum: float  # Σ cos(image, caption) over the same rows
    accepted: torch.Tensor  # [s] bool: support rows that pass the per-sample checks
    support: torch.Tensor  # [s, d] image rows; the coverage and CMMD sets are prefixes of it
    coverage_rows: int
    coverage_radii_sq: torch.Tensor  # k-NN radii² within support[:coverage_rows]
    cmmd_rows: int
    cmmd_sigma: float
    cmmd_kernel: torch.Tensor  # RBF kernel matrix of support[:cmmd_rows]
    duplicate_cosine: float


def batch_values(
    ctx: BatchContext,
    image: torch.Tensor,
    text: torch.Tensor,
    exclude: torch.Tensor | None = None,
) -> dict[str, float]:
    """The distribution metrics of the unit rows ``image``/``text`` (row-aligned pairs).

    ``exclude`` (support indices of the rows, in resamples) removes them from the reference.
    """
    ref = ctx.moments
    align = (image * text).sum(dim=1)
    align_sum = ctx.align_sum
    if exclude is not None:
        rows = ctx.support[exclude]
        ref = Moments(
            ref.count - rows.shape[0], ref.sum - rows.sum(0), ref.sum_outer - rows.T @ rows
        )
        align_sum -= float(align.sum())
    n = image.shape[0]
    centred = image - image.mean(dim=0)
    return {
        "alignment_shift": float(align.mean()) - align_sum / ref.count,
        "variance_ratio": float((centred * centred).sum()) / n / _trace(ref.covariance),
        "vendi_ratio": vendi_score(image) / vendi_score(ref),
        "coverage": _coverage(ctx, image, _kept(ctx, ctx.coverage_rows, exclude)),
        "frechet_distance": frechet_distance(image, ref),
        "cmmd": _cmmd(ctx, image, _kept(ctx, ctx.cmmd_rows, exclude)),
    }


def duplicate_rate(image: torch.Tensor, cosine: float) -> float:
    """Share of rows whose cosine to an earlier row is above ``cosine``."""
    return float((max_cosine(image, exclude="later") > cosine).double().mean())


def _trace(matrix: torch.Tensor) -> float:
    return max(float(torch.trace(matrix)), 1e-300)


def _kept(ctx: BatchContext, rows: int, exclude: torch.Tensor | None) -> torch.Tensor:
    keep = ctx.accepted[:rows].clone()
    if exclude is not None:
        keep[exclude[exclude < rows]] = False
    return keep


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(−‖a_i − b_j‖² / 2σ²)`` (the CMMD kernel), ``[len(a), len(b)]``."""
    d2 = sq_dists(a, b, (a * a).sum(dim=1), (b * b).sum(dim=1))
    return torch.exp(d2.mul_(-1.0 / (2.0 * sigma * sigma)))


def _cmmd(ctx: BatchContext, image: torch.Tensor, keep: torch.Tensor) -> float:
    """:func:`synthguard.functional.cmmd` of the batch against the kept CMMD rows.

    The reference self-term comes from the precomputed kernel matrix, so a resample costs
    O(m² + m·c) kernel evaluations instead of O(c²).
    """
    ref = ctx.support[: ctx.cmmd_rows][keep]
    if ref.shape[0] == 0:  # every CMMD row excluded (only in contrived resamples)
        return math.nan
    out = torch.nonzero(~keep).flatten()
    row_sums = ctx.cmmd_kernel.sum(dim=1)
    # Σ over kept pairs = Σ all − 2 Σ rows of dropped + Σ dropped×dropped (no c×c copy).
    kept_sum = row_sums.sum() - 2.0 * row_sums[out].sum() + ctx.cmmd_kernel[out][:, out].sum()
    kyy = float(kept_sum) / (ref.shape[0] ** 2)
    kxx = float(rbf_kernel(image, image, ctx.cmmd_sigma).fill_diagonal_(1.0).mean())
    kxy = float(rbf_kernel(image, ref, ctx.cmmd_sigma).mean())
    return CMMD_SCALE * (kxx + kyy - 2.0 * kxy)


def _coverage(ctx: BatchContext, image: torch.Tensor, keep: torch.Tensor) -> float:
    """Fraction of kept coverage-set points whose k-NN ball holds a batch row (Naeem et al.)."""
    real = ctx.support[: ctx.coverage_rows][keep]
    if real.shape[0] == 0:
        return math.nan
    radii = ctx.coverage_radii_sq[keep]
    # The same tie band as synthguard.functional.prdc: on-sphere counts as outside.
    radii = radii - 1e-11 * (2.0 * float((real * real).sum(1).max()))
    i_sq = (image * image).sum(dim=1)
    r_sq = (real * real).sum(dim=1)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, real.shape[0], _BLOCK):
        stop = start + _BLOCK
        d2 = sq_dists(real[start:stop], image, r_sq[start:stop], i_sq)
        covered[start:stop] = (d2 < radii[start:stop, None]).any(dim=1)
    return float(covered.double().mean())


def batch_null(
    ctx: BatchContext,
    support_text: torch.Tensor,
    accepted: torch.Tensor,
    size: int,
    duplicate_size: int,
    resamples: int,
    seed: int,
) -> torch.Tensor:
    """``[R, K]`` resampled null of the distribution tests and the duplicate rate.

    Distribution metrics: ``size`` rows drawn from the ``accepted`` support indices (those the
    per-sample checks pass, leave-one-out); ``size=0`` skips them (NaN columns). Duplicate
    rate: ``duplicate_size`` rows drawn from the whole support. Columns follow
    :data:`RESAMPLED_TESTS`.
    """
    generator = torch.Generator().manual_seed(seed)
    s = ctx.support.shape[0]
    out = torch.empty(resamples, len(RESAMPLED_TESTS), dtype=torch.float64)
    for i in range(resamples):
        values = dict.fromkeys(RESAMPLED_TESTS, math.nan)
        if size:
            idx = accepted[torch.randperm(accepted.numel(), generator=generator)[:size]]
            values.update(batch_values(ctx, ctx.support[idx], support_text[idx], exclude=idx))
        dup_idx = torch.randperm(s, generator=generator)[:duplicate_size]
        values["duplicate_rate"] = duplicate_rate(ctx.support[dup_idx], ctx.duplicate_cosine)
        out[i] = torch.tensor([values[name] for name in RESAMPLED_TESTS], dtype=torch.float64)
    return out


def flag_rate_test(
    flagged: int, total: int, support_flagged: int, support_size: int, level: float
) -> tuple[float, float, float]:
    """Exact one-sided p-value of ``flagged`` of ``total``, the rate bound at ``level`` and
    the null's median rate.

    Under the null the count is ``BetaBinomial(total, U + 1, n − U + 1)``; the test fails when
    the rate is strictly above the returned bound.
    """
    a, b = support_flagged + 1, support_size - support_flagged + 1
    p = float(scipy_stats.betabinom.sf(flagged - 1, total, a, b))
    # The first k with P(X >= k) <= level, by bisection (the tail falls with k; P(X >= total
    # + 1) = 0): O(log total) tail evaluations, so pools of millions of rows cost the same.
    first, last = 0, total + 1
    while first < last:
        mid = (first + last) // 2
        if float(scipy_stats.betabinom.sf(mid - 1, total, a, b)) <= level:
            last = mid
        else:
            first = mid + 1
    median = float(scipy_stats.betabinom.median(total, a, b)) / total
    return p, (first - 1) / total, median


# -- p-values, bounds and Holm --------------------------------------------------------------


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


def holm(p_values: list[float], alpha: float) -> tuple[list[float], list[float], list[bool]]:
    """Holm's step-down procedure: per test its level, adjusted p-value and rejection.

    The test of rank ``i`` (0-based, ascending p) is tried at ``alpha / (K − i)``; testing stops
    at the first that passes. Adjusted p-values ``max_{j<=i} min(1, (K − j)·p_(j))`` are
    rejected exactly when ``<= alpha``.
    """
    k = len(p_values)
    order = np.argsort(np.asarray(p_values, dtype=np.float64), kind="stable")
    levels, adjusted, rejected = [0.0] * k, [0.0] * k, [False] * k
    running, still = 0.0, True
    for rank, index in enumerate(order):
        levels[index] = alpha / (k - rank)
        running = max(running, min(1.0, (k - rank) * p_values[index]))
        adjusted[index] = running
        still = still and p_values[index] <= levels[index]
        rejected[index] = still
    return levels, adjusted, rejected
