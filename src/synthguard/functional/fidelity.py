"""Fidelity and coverage: precision, recall, density, coverage (Naeem et al., ICML 2020).

Computed blockwise from k-NN radii: memory O(block_size · n), never an n×n matrix, with the
same definitions, strict inequalities and Euclidean distances as the ``prdc`` package.

The definition is float64 (:func:`_radii_sq_exact`, :func:`_prdc_exact`, kept as the
reference). :func:`prdc` reaches the same ball memberships from float32 distance blocks,
recomputing in float64 only the pairs a rigorous rounding bound cannot settle
(:mod:`synthguard.functional._knn`, where the bound is derived), and runs the float64 path
itself when the bound cannot settle them all. :func:`knn_radii` stays float64.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from synthguard._validation import as_embeddings, check_int, check_same_device, check_same_dim
from synthguard.functional._common import DEFAULT_BLOCK_SIZE, Result, check_block_size, sq_dists
from synthguard.functional._knn import fast_prdc

__all__ = ["PRDCResult", "knn_radii", "prdc"]

_METRICS = ("precision", "recall", "density", "coverage")
# Relative width of the band around a k-NN sphere treated as "on the sphere" (see prdc()).
_TIE_RTOL = 1e-11


class PRDCResult(Result):
    """Precision, recall, density and coverage of ``fake`` against ``real``.

    Also readable like the ``prdc`` package's dict: ``result["precision"]``.

    Attributes:
        precision: fraction of fake samples inside some real k-NN ball.
        recall: fraction of real samples inside some fake k-NN ball.
        density: mean number of real k-NN balls containing a fake sample, divided by k.
        coverage: fraction of real samples whose k-NN ball contains a fake sample.
        k: the neighbourhood size used.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    k: int

    def __getitem__(self, key: str) -> float:
        if key not in _METRICS:
            raise KeyError(key)
        return float(getattr(self, key))

    def keys(self) -> tuple[str, ...]:
        """The metric names, as in the ``prdc`` package's result dict."""
        return _METRICS


def knn_radii(x: Any, k: int = 5, *, block_size: int = DEFAULT_BLOCK_SIZE) -> torch.Tensor:
    """``[n]`` distance from each row to its k-th nearest other row (float64), blockwise.

    Like ``prdc``: the (k+1)-th smallest distance counting the row itself, so duplicate rows
    are neighbours at distance 0. Float64 throughout (:func:`_radii_sq_exact`): the radii of
    :func:`prdc`'s float32 path equal these only up to float64 rounding (the last bits), which
    its certified decisions allow for but returned values would not.

    Example:
        >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 2.0]
    """
    k = check_int("k", k, minimum=1)
    t = as_embeddings("x", x, min_rows=k + 1, constraint=f"more than k={k}")
    return _radii_sq_exact(t, k, check_block_size(block_size)).sqrt_()


def _radii_sq_exact(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Squared k-NN radii in float64: the (k+1)-th smallest squared distance, counting the row
    itself (the definition)."""
    # Tiles (I, J) with I <= J only: the distance matrix is symmetric, so each tile updates the
    # running k+1 smallest of its rows and, transposed, of its columns: half the matmul work
    # of full rows, memory O(block² + n·k).
    n = x.shape[0]
    sq = (x * x).sum(dim=1)
    best = torch.full((n, k + 1), math.inf, dtype=torch.float64, device=x.device)

    def push(rows: slice, d2: torch.Tensor) -> None:
        cand = torch.topk(d2, min(k + 1, d2.shape[1]), dim=1, largest=False, sorted=False)
        merged = torch.cat([best[rows], cand.values], dim=1)
        best[rows] = torch.topk(merged, k + 1, dim=1, largest=False, sorted=False).values

    for i0 in range(0, n, block):
        rows_i = slice(i0, min(i0 + block, n))
        for j0 in range(i0, n, block):
            rows_j = slice(j0, min(j0 + block, n))
            d2 = sq_dists(x[rows_i], x[rows_j], sq[rows_i], sq[rows_j])
            if i0 == j0:
                d2.fill_diagonal_(0.0)  # the row itself, counted as in the prdc package
            push(rows_i, d2)
            if i0 != j0:
                push(rows_j, d2.T)
            del d2  # free the tile before the next one is allocated
    return best.amax(dim=1)


def prdc(real: Any, fake: Any, k: int = 5, *, block_size: int = DEFAULT_BLOCK_SIZE) -> PRDCResult:
    """Precision, recall, density and coverage of ``fake`` against ``real`` with k-NN balls.

    Equal to ``prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)``,
    with the same strict inequalities: a fake exactly on a k-NN sphere (e.g. a copy of a real
    sample's k-th neighbour) is outside it. Squared distances within ``1e-11 · max‖x‖²`` of a
    squared radius count as on the sphere, so such ties never depend on float rounding.

    Every ball membership is the float64 definition's (:func:`_prdc_exact`): distances come
    from float32 blocks and a pair is recomputed in float64 only when it lies within a
    rigorous rounding bound of its radius; when the bound cannot certify all of them (or the
    device's float32 matmuls use TF32/bf16) the float64 path runs instead.

    Args:
        real: ``[n_real, d]`` reference embeddings, ``n_real > k``.
        fake: ``[n_fake, d]`` synthetic embeddings, ``n_fake > k``.
        k: neighbourhood size (5 in Naeem et al.).
        block_size: rows per block; memory O(block_size · max(n_real, n_fake)).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(200, 8, generator=g)
        >>> result = prdc(real, real.clone())
        >>> result["precision"], result.coverage
        (1.0, 1.0)
    """
    r, f, k, block = _validate(real, fake, k, block_size)
    counts = fast_prdc(r, f, k, block, _TIE_RTOL)
    return _prdc_exact(r, f, k, block) if counts is None else _result(*counts, k=k)


def _validate(
    real: Any, fake: Any, k: Any, block_size: Any
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The validated float64 rows, ``k`` and block size of :func:`prdc`."""
    k = check_int("k", k, minimum=1)
    constraint = f"more than k={k}"
    r = as_embeddings("real", real, min_rows=k + 1, constraint=constraint)
    f = as_embeddings("fake", fake, min_rows=k + 1, constraint=constraint)
    check_same_dim("real", r, "fake", f)
    check_same_device("real", r, "fake", f)
    return r, f, k, check_block_size(block_size)


def _result(
    inside: torch.Tensor, recalled: torch.Tensor, covered: torch.Tensor, *, k: int
) -> PRDCResult:
    """The four metrics from the real balls per fake and the recalled and covered reals."""
    return PRDCResult(
        precision=float((inside > 0).double().mean()),
        recall=float(recalled.double().mean()),
        density=float(inside.double().mean()) / k,
        coverage=float(covered.double().mean()),
        k=k,
    )


def _prdc_exact(r: torch.Tensor, f: torch.Tensor, k: int, block: int) -> PRDCResult:
    """:func:`prdc` in float64 throughout, on validated float64 rows: the definition."""
    radii_real, radii_fake = _radii_sq_exact(r, k, block), _radii_sq_exact(f, k, block)
    r_sq, f_sq = (r * r).sum(dim=1), (f * f).sum(dim=1)
    # Squared distances within tie_tol of a squared radius count as on the sphere, i.e. outside
    # (the strict "<" of Naeem et al. and prdc). Copies of real samples sit exactly on k-NN
    # spheres; matmul rounding (~d·eps·‖x‖²) must not decide whether they are inside.
    tie_tol = _TIE_RTOL * float(r_sq.max() + f_sq.max())
    radii_real -= tie_tol
    radii_fake -= tie_tol
    inside = torch.zeros(f.shape[0], dtype=torch.int64, device=f.device)  # real balls per fake
    recalled = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    covered = torch.zeros_like(recalled)
    for start in range(0, r.shape[0], block):
        stop = min(start + block, r.shape[0])
        d2 = sq_dists(r[start:stop], f, r_sq[start:stop], f_sq)  # [b, n_fake]
        in_real_ball = d2 < radii_real[start:stop, None]
        inside += in_real_ball.sum(dim=0)
        recalled[start:stop] = (d2 < radii_fake[None, :]).any(dim=1)
        covered[start:stop] = in_real_ball.any(dim=1)  # nearest fake inside the real ball
        del d2, in_real_ball  # free the block before the next one is allocated
    return _result(inside, recalled, covered, k=k)
