"""Drift against a reference: centroid shift, Fréchet distance, modality gap, label drift.

The embedding metrics take ``[n, d]`` tensors or arrays, :class:`~synthguard.stats.Moments` or
:class:`~synthguard.EmbeddingStats` (its image moments) and are computed from sums, so they are
exact for merged statistics. Kernel two-sample tests live in :mod:`synthguard.functional.mmd`.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy import stats as scipy_stats

from synthguard._errors import InvalidInputError
from synthguard._validation import as_embeddings, as_vector, check_same_device, check_same_dim
from synthguard.functional._common import Result, as_moments
from synthguard.stats import EmbeddingStats, Moments

__all__ = [
    "CentroidShift",
    "LabelDrift",
    "centroid_shift",
    "frechet_distance",
    "label_drift",
    "modality_gap",
]


class CentroidShift(Result):
    """How far the centroid of a batch moved from the reference centroid.

    Attributes:
        distance: ``‖μ_x − μ_y‖``.
        cosine_distance: ``1 − cos(μ_x, μ_y)``.
    """

    distance: float
    cosine_distance: float


class LabelDrift(Result):
    """Difference between two label distributions.

    Attributes:
        js_divergence: Jensen–Shannon divergence in bits (base 2, in ``[0, 1]``).
        chi2: Pearson χ² statistic of the 2×K contingency table (no continuity correction).
        p_value: χ² test p-value for "both samples come from one label distribution".
        dof: degrees of freedom, (number of labels seen in either sample) − 1.
    """

    js_divergence: float
    chi2: float
    p_value: float
    dof: int


def _two_moments(x: Any, y: Any, min_rows: int) -> tuple[Moments, Moments]:
    mx, my = as_moments("x", x, min_rows=min_rows), as_moments("y", y, min_rows=min_rows)
    if mx.dim != my.dim:
        raise InvalidInputError(
            f"x and y must have the same dimension d, got {mx.dim} and {my.dim}"
        )
    return mx, my


def _mean(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, (Moments, EmbeddingStats)):
        return as_moments(name, value).mean
    return as_embeddings(name, value).mean(dim=0)  # O(n·d); no need for Σxxᵀ


def centroid_shift(x: Any, y: Any) -> CentroidShift:
    """Distance and cosine distance between the centroids of ``x`` (batch) and ``y`` (reference).

    Example:
        >>> s = centroid_shift(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        >>> round(s.distance, 6), s.cosine_distance
        (1.414214, 1.0)
    """
    mu_x, mu_y = _mean("x", x), _mean("y", y)
    if mu_x.shape != mu_y.shape:
        raise InvalidInputError(
            f"x and y must have the same dimension d, got {mu_x.numel()} and {mu_y.numel()}"
        )
    mu_y = mu_y.to(mu_x.device)
    norm_x, norm_y = torch.linalg.vector_norm(mu_x), torch.linalg.vector_norm(mu_y)
    if float(norm_x) == 0.0 or float(norm_y) == 0.0:
        raise InvalidInputError(
            f"centroids must be non-zero for a cosine, got ‖μ_x‖={float(norm_x)}, "
            f"‖μ_y‖={float(norm_y)}"
        )
    cos = float(mu_x @ mu_y / (norm_x * norm_y))
    return CentroidShift(
        distance=float(torch.linalg.vector_norm(mu_x - mu_y)),
        cosine_distance=1.0 - min(max(cos, -1.0), 1.0),
    )


def _trace_sqrt_product(cov_x: torch.Tensor, cov_y: torch.Tensor) -> torch.Tensor:
    """``tr((Σ_y^½ Σ_x Σ_y^½)^½)``: the sum of square roots of the eigenvalues of ``Σ_x Σ_y``.

    Those eigenvalues are the ones of the symmetric PSD matrix ``Rᵀ Σ_x R`` for any factor
    ``Σ_y = R Rᵀ`` (:func:`_psd_factor`). Stacked ``[..., d, d]`` inputs give ``[...]`` traces
    (the resampled null's), summed in float64.
    """
    factor = _psd_factor(cov_y)
    inner = factor.transpose(-1, -2) @ cov_x @ factor
    roots = torch.linalg.eigvalsh((inner + inner.transpose(-1, -2)) / 2).clamp_min(0.0).sqrt()
    return roots.to(torch.float64).sum(dim=-1)


def _psd_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor ``R`` with ``R Rᵀ = cov`` of each ``[..., d, d]`` PSD matrix: the Cholesky factor
    when positive definite (3× faster than an eigendecomposition at d = 2048), else the
    symmetric square root from ``eigh`` (singular, e.g. n <= d; negative rounding -> 0)."""
    factor, info = torch.linalg.cholesky_ex(cov)
    singular = torch.nonzero(info.reshape(-1)).flatten().tolist()
    if singular:
        d = cov.shape[-1]
        flat, covs = factor.reshape(-1, d, d), cov.reshape(-1, d, d)
        for b in singular:
            w, v = torch.linalg.eigh(covs[b])
            flat[b] = (v * w.clamp_min(0.0).sqrt()) @ v.T
        factor = flat.reshape(cov.shape)
    return factor


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between Gaussians fitted to ``x`` and ``y``.

    ``‖μ_x − μ_y‖² + tr(Σ_x + Σ_y − 2(Σ_y^½ Σ_x Σ_y^½)^½)`` with unbiased covariances
    (``ddof=1``, as pytorch-fid and torchmetrics). The trace of the matrix square root comes
    from a symmetric eigenvalue problem (through a Cholesky or symmetric square-root factor of
    ``Σ_y``), so there are no complex parts to discard (unlike ``scipy.linalg.sqrtm(Σ_x Σ_y)``)
    and singular covariances (n <= d) are fine; the result is clipped at 0 against rounding.

    Args:
        x: ``[n, d]`` embeddings, :class:`~synthguard.stats.Moments` or
            :class:`~synthguard.EmbeddingStats` (image moments); at least 2 rows.
        y: the same for the reference.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randn(500, 4, generator=g)
        >>> frechet_distance(a, a + 1.0) > 3.9  # ‖shift‖² = 4
        True
    """
    mx, my = _two_moments(x, y, 2)
    device = mx.sum.device
    cov_x, cov_y = mx.cov(ddof=1), my.cov(ddof=1).to(device)
    diff = mx.mean - my.mean.to(device)
    fd = (
        diff @ diff
        + torch.trace(cov_x)
        + torch.trace(cov_y)
        - 2.0 * _trace_sqrt_product(cov_x, cov_y)
    )
    return max(float(fd), 0.0)


def modality_gap(img: Any, txt: Any = None) -> float:
    """Modality gap ``‖μ_img − μ_txt‖`` between image and caption centroids.

    Args:
        img: ``[n, d]`` image embeddings, or an :class:`~synthguard.EmbeddingStats` (then
            ``txt`` must be omitted and the gap is taken over its image–caption pairs).
        txt: ``[m, d]`` caption embeddings (``m`` may differ from ``n``).

    Example:
        >>> modality_gap(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        1.4142135623730951
    """
    if isinstance(img, EmbeddingStats):
        if txt is not None:
            raise InvalidInputError("txt must be None when img is an EmbeddingStats")
        return float(torch.linalg.vector_norm(img.pair_mean_diff))
    if txt is None:
        raise InvalidInputError("txt is required when img is not an EmbeddingStats")
    u, v = as_embeddings("img", img), as_embeddings("txt", txt)
    check_same_dim("img", u, "txt", v)
    check_same_device("img", u, "txt", v)
    return float(torch.linalg.vector_norm(u.mean(dim=0) - v.mean(dim=0)))


def _counts(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, EmbeddingStats):
        if value.num_labels is None:
            raise InvalidInputError(f"{name} is an EmbeddingStats without num_labels")
        value = value.label_counts
    counts = as_vector(name, value, nonnegative=True).cpu()
    if float(counts.sum()) <= 0.0:
        raise InvalidInputError(f"{name} must have a positive total count, got 0")
    return counts


def label_drift(counts_a: Any, counts_b: Any) -> LabelDrift:
    """Jensen–Shannon divergence and χ² homogeneity test between two label-count vectors.

    Args:
        counts_a: ``[K]`` non-negative counts per class (or an :class:`~synthguard.EmbeddingStats`
            with ``num_labels``), e.g. of the synthetic batch.
        counts_b: ``[K]`` counts of the reference, same classes in the same order.

    Classes absent from both are left out of the χ² table. With fewer than two classes seen
    the test is degenerate: ``chi2 = 0``, ``p_value = 1``, ``dof = 0``.

    Example:
        >>> r = label_drift([10, 10], [10, 10])
        >>> r.js_divergence, r.chi2, r.p_value, r.dof
        (0.0, 0.0, 1.0, 1)
    """
    a, b = _counts("counts_a", counts_a), _counts("counts_b", counts_b)
    if a.shape != b.shape:
        raise InvalidInputError(
            f"counts_a and counts_b must have the same number of classes, "
            f"got {a.numel()} and {b.numel()}"
        )
    p, q = a / a.sum(), b / b.sum()
    mid = (p + q) / 2

    def kl_bits(r: torch.Tensor) -> float:
        keep = r > 0  # 0·log 0 = 0; mid > 0 wherever r > 0
        return float((r[keep] * torch.log2(r[keep] / mid[keep])).sum())

    js = min(max(0.5 * kl_bits(p) + 0.5 * kl_bits(q), 0.0), 1.0)
    seen = (a + b) > 0
    table = torch.stack([a[seen], b[seen]])
    dof = int(seen.sum()) - 1
    if dof < 1:
        return LabelDrift(js_divergence=js, chi2=0.0, p_value=1.0, dof=0)
    expected = table.sum(dim=1, keepdim=True) * table.sum(dim=0, keepdim=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    p_value = float(scipy_stats.chi2.sf(chi2, dof))
    return LabelDrift(js_divergence=js, chi2=chi2, p_value=p_value, dof=dof)
