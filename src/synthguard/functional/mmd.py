"""Kernel two-sample statistics: CMMD, unbiased MMD² and a batched permutation test.

RBF kernel ``k(a, b) = exp(−‖a − b‖² / (2σ²))`` with σ = 10 (Jayasumana et al., 2024, "Rethinking
FID: towards a better evaluation metric for image generation"). Kernel sums are accumulated
blockwise in float64, so memory is O(block_size · n), never O(n²).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from synthguard._validation import (
    as_embeddings,
    check_float,
    check_int,
    check_same_device,
    check_same_dim,
)
from synthguard.functional._common import DEFAULT_BLOCK_SIZE, check_block_size, sq_dists

__all__ = [
    "PermutationTestResult",
    "cmmd",
    "kernel_sum",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "rbf_kernel",
]

CMMD_SCALE = 1000.0


class PermutationTestResult(NamedTuple):
    """``(statistic, p_value)`` of :func:`mmd_permutation_test`; unpacks like a tuple.

    Attributes:
        statistic: the observed unbiased MMD².
        p_value: ``(k + 1) / (P + 1)``, k = permutations whose statistic is at least as large.
    """

    statistic: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        """Plain-Python dict of the fields."""
        return {"statistic": self.statistic, "p_value": self.p_value}


def _inputs(x: Any, y: Any, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    constraint = f"at least {min_rows}"
    a = as_embeddings("x", x, min_rows=min_rows, constraint=constraint)
    b = as_embeddings("y", y, min_rows=min_rows, constraint=constraint)
    check_same_dim("x", a, "y", b)
    check_same_device("x", a, "y", b)
    return a, b


def _gamma(sigma: Any) -> float:
    s = check_float("sigma", sigma, low=0.0, low_open=True)
    return 1.0 / (2.0 * s * s)


def kernel_sum(a: torch.Tensor, b: torch.Tensor | None, gamma: float, block: int) -> float:
    """``Σ_ij k(a_i, b_j)``; with ``b=None`` the self-sum over ``a``, diagonal exactly 1."""
    other = a if b is None else b
    a_sq, o_sq = (a * a).sum(dim=1), (other * other).sum(dim=1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[0], block):
        stop = min(start + block, a.shape[0])
        d2 = sq_dists(a[start:stop], other, a_sq[start:stop], o_sq)
        if b is None:  # self-distances are exactly 0, not the expansion's rounding residue
            d2.diagonal(offset=start).zero_()
        total += torch.exp(d2.mul_(-gamma)).sum()
    return float(total)


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(−‖a_i − b_j‖² / 2σ²)`` (the CMMD kernel) as a ``[len(a), len(b)]`` matrix.

    For blocks the caller bounds (a batch against a reference sample); whole data sets go
    through the blockwise sums of :func:`cmmd`.
    """
    d2 = sq_dists(a, b, (a * a).sum(dim=1), (b * b).sum(dim=1))
    return torch.exp(d2.mul_(-1.0 / (2.0 * sigma * sigma)))


def cmmd(x: Any, y: Any, *, sigma: float = 10.0, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """CMMD: ``1000 · MMD²`` (biased V-statistic, as in Jayasumana et al.'s reference code).

    ``MMD² = mean k(x, x') + mean k(y, y') − 2 mean k(x, y)``, diagonal terms included. Meant
    for CLIP embeddings (unit vectors); rows are used as given.

    Args:
        x: ``[m, d]`` embeddings (e.g. the synthetic batch).
        y: ``[n, d]`` embeddings (e.g. the reference sample).
        sigma: RBF bandwidth.
        block_size: rows per block (memory O(block_size · (m + n))).

    Example:
        >>> x = torch.eye(4)
        >>> cmmd(x, x)
        0.0
    """
    a, b = _inputs(x, y, 1)
    gamma, block = _gamma(sigma), check_block_size(block_size)
    m, n = a.shape[0], b.shape[0]
    kxx = kernel_sum(a, None, gamma, block) / (m * m)
    kyy = kernel_sum(b, None, gamma, block) / (n * n)
    kxy = kernel_sum(a, b, gamma, block) / (m * n)
    return CMMD_SCALE * (kxx + kyy - 2.0 * kxy)


def mmd2_unbiased(
    x: Any, y: Any, *, sigma: float = 10.0, block_size: int = DEFAULT_BLOCK_SIZE
) -> float:
    """Unbiased MMD² (U-statistic, Gretton et al., 2012) with the RBF kernel; not scaled.

    ``Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2 Σ_ij k(x_i, y_j)/(mn)``;
    may be slightly negative when both samples come from one distribution.

    Example:
        >>> x = torch.eye(4)
        >>> mmd2_unbiased(x, x) < 0  # the U-statistic of identical samples
        True
    """
    a, b = _inputs(x, y, 2)
    gamma, block = _gamma(sigma), check_block_size(block_size)
    m, n = a.shape[0], b.shape[0]
    kxx = (kernel_sum(a, None, gamma, block) - m) / (m * (m - 1))
    kyy = (kernel_sum(b, None, gamma, block) - n) / (n * (n - 1))
    kxy = kernel_sum(a, b, gamma, block) / (m * n)
    return kxx + kyy - 2.0 * kxy


def mmd_permutation_test(
    x: Any,
    y: Any,
    n_permutations: int = 1000,
    seed: int = 0,
    *,
    sigma: float = 10.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> PermutationTestResult:
    """Permutation test of "x and y come from one distribution" with the unbiased MMD².

    The pooled sample is relabelled ``P = n_permutations`` times (a random ``m``-subset becomes
    ``x``); ``p = (k + 1) / (P + 1)`` where ``k`` counts permuted statistics ``>=`` the
    observed one, so p is never 0 and the test is exact at any level. All permutations are
    evaluated together in matrix form on the inputs' device: each kernel block ``K[b, :]`` is
    computed once and multiplied by the ``[N, P+1]`` assignment matrix. Memory is
    O(block_size · N + P · N), time O(N² · (d + P)) for ``N = m + n``. Permutations are drawn
    on the CPU from ``seed``, so results do not depend on the device.

    Args:
        x: ``[m, d]`` embeddings, ``m >= 2``.
        y: ``[n, d]`` embeddings, ``n >= 2``.
        n_permutations: number of random relabellings ``P``.
        seed: seed of the permutations.
        sigma: RBF bandwidth.
        block_size: kernel rows per block.

    Returns:
        ``(statistic, p_value)``; the statistic equals :func:`mmd2_unbiased` of ``x, y``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g) + 1.0
        >>> mmd_permutation_test(x, y, n_permutations=99).p_value
        0.01
    """
    a, b = _inputs(x, y, 2)
    gamma, block = _gamma(sigma), check_block_size(block_size)
    n_perm = check_int("n_permutations", n_permutations, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    m, n = a.shape[0], b.shape[0]
    z = torch.cat([a, b])
    big_n = m + n
    # Row 0 is the observed split; rows 1..P are random m-subsets of the pooled sample.
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(n_perm, big_n, generator=generator).argsort(dim=1)
    assign = torch.zeros(n_perm + 1, big_n, dtype=torch.float64)
    assign[0, :m] = 1.0
    assign[1:].scatter_(1, order[:, :m], 1.0)
    assign = assign.to(z.device)
    # With K0 = K minus its diagonal and e the x-indicator of a split, the three kernel sums
    # of the U-statistic are eᵀK0e, (1 − e)ᵀK0e and (1 − e)ᵀK0(1 − e): only eᵀK0e, the row
    # sums r = K0·1 and their total are needed per split.
    z_sq = (z * z).sum(dim=1)
    quad = torch.zeros(n_perm + 1, dtype=torch.float64, device=z.device)  # eᵀK0e
    cross = torch.zeros_like(quad)  # eᵀK0·1
    total = torch.zeros((), dtype=torch.float64, device=z.device)  # 1ᵀK0·1
    for start in range(0, big_n, block):
        stop = min(start + block, big_n)
        kb = torch.exp(sq_dists(z[start:stop], z, z_sq[start:stop], z_sq).mul_(-gamma))
        kb.diagonal(offset=start).zero_()
        e_block = assign[:, start:stop]  # [P+1, b]
        quad += ((kb @ assign.T) * e_block.T).sum(dim=0)
        rows = kb.sum(dim=1)
        cross += e_block @ rows
        total += rows.sum()
    xx, xy = quad, cross - quad
    yy = total - 2.0 * cross + quad
    stats = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)
    stats = stats.cpu()
    observed = float(stats[0])
    # Splits equal to the observed one can differ from it by summation rounding only.
    tol = 1e-9 * float(stats.abs().max()) + 1e-15
    k = int((stats[1:] >= observed - tol).sum())
    return PermutationTestResult(statistic=observed, p_value=(k + 1) / (n_perm + 1))
