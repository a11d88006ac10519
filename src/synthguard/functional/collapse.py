"""Collapse metrics of a batch against a reference: one definition for every consumer.

The guard's batch tests (and their resampled nulls), the :class:`~synthguard.CollapseMonitor`
and the torchmetrics adapter all call :func:`collapse_metrics`; they differ only in the
:class:`CollapseReference` they pass (the whole reference support, or the support pairs that
pass the per-sample checks minus a resample's own rows).

Metrics (``docs/guard.md`` has the decision rules built on them):

- ``alignment_mean``: mean image–caption cosine of the batch;
- ``alignment_shift``: ``alignment_mean`` minus the reference's mean;
- ``alignment_variance``: variance of the batch's cosines over the reference's (a collapsing
  captioner's alignment spreads out before its mean moves);
- ``variance_ratio``: total variance of the batch's images over the reference's;
- ``vendi_ratio``: Vendi score of the batch over the reference's;
- ``frechet_distance``: Fréchet distance of the two Gaussians;
- ``coverage``: share of the reference's k-NN balls (coverage rows) holding a batch row;
- ``density``: balls holding a batch row, per row, over ``k`` (Naeem et al.; 1 on real data,
  lower when rows drift off the real manifold);
- ``cmmd``: CMMD against the reference's CMMD rows;
- ``text_variance_ratio`` / ``text_vendi_ratio``: the same two diversity ratios on the caption
  embeddings (a collapsing captioner's captions grow generic and alike; NaN when the reference
  has no caption moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import as_embeddings
from synthguard.functional._common import DEFAULT_BLOCK_SIZE, sq_dists
from synthguard.functional.diversity import total_variance, vendi_score
from synthguard.functional.drift import frechet_distance
from synthguard.functional.fidelity import knn_radii
from synthguard.functional.mmd import CMMD_SCALE, kernel_sum, rbf_kernel
from synthguard.stats import EmbeddingStats, Moments

__all__ = ["CollapseReference", "collapse_metrics", "collapse_reference"]

#: Squared distances within this fraction of ``2·max‖x‖²`` of a squared radius count as on the
#: sphere (outside), as in :func:`synthguard.functional.prdc`.
_TIE_RTOL = 1e-11


@dataclass(frozen=True)
class CollapseReference:
    """What a batch's collapse metrics are measured against (float64 rows on one device).

    Attributes:
        moments: image moments of the comparison pairs.
        alignment: ``(pairs, Σ cos, Σ cos²)`` of the comparison pairs' image–caption cosine.
        coverage_rows: ``[c, d]`` centres of the k-NN balls of ``coverage``.
        coverage_radii_sq: ``[c]`` their squared k-NN radii (within the coverage set).
        cmmd_rows: ``[r, d]`` rows CMMD compares with.
        cmmd_self: mean RBF kernel over ``cmmd_rows`` pairs (diagonal included); computed when
            ``None`` (callers with a precomputed kernel pass it).
        cmmd_sigma: the RBF bandwidth of CMMD.
        text_moments: caption moments of the comparison pairs (``None``: no text metrics).
        k: the neighbourhood size of the coverage balls (density divides by it).
    """

    moments: Moments
    alignment: tuple[int, float, float]
    coverage_rows: torch.Tensor
    coverage_radii_sq: torch.Tensor
    cmmd_rows: torch.Tensor
    cmmd_self: float | None = None
    cmmd_sigma: float = 10.0
    text_moments: Moments | None = None
    k: int = 5


def collapse_reference(
    image: Any,
    text: Any,
    *,
    k: int = 5,
    coverage_rows: int | None = None,
    cmmd_rows: int = 1000,
    coverage_radii_sq: torch.Tensor | None = None,
) -> CollapseReference:
    """A :class:`CollapseReference` of real unit pairs (``[n, d]`` image and text rows).

    The coverage set is the first ``coverage_rows`` rows (default all), the CMMD set the first
    ``cmmd_rows``; pass ``coverage_radii_sq`` when the radii are already known.

    Example:
        >>> import torch
        >>> x = torch.nn.functional.normalize(torch.randn(50, 4, dtype=torch.float64), dim=1)
        >>> ref = collapse_reference(x, x, k=3)
        >>> collapse_metrics(x, x, ref)["coverage"]
        1.0
    """
    img = as_embeddings("image", image)
    txt = as_embeddings("text", text, dim=img.shape[1])
    c = img.shape[0] if coverage_rows is None else min(coverage_rows, img.shape[0])
    if coverage_radii_sq is None:
        coverage_radii_sq = knn_radii(img[:c], k) ** 2
    cos = (img * txt).sum(dim=1)
    return CollapseReference(
        moments=Moments(img.shape[0], img.sum(dim=0), img.T @ img),
        text_moments=Moments.from_embeddings(txt),
        alignment=(img.shape[0], float(cos.sum()), float((cos * cos).sum())),
        coverage_rows=img[:c],
        coverage_radii_sq=coverage_radii_sq,
        k=k,
        cmmd_rows=img[: min(cmmd_rows, img.shape[0])],
    )


def collapse_metrics(
    image: Any, text: Any, reference: CollapseReference, *, sample: Any = None
) -> dict[str, float]:
    """The collapse metrics of a batch against ``reference``.

    Args:
        image: ``[m, d]`` unit image rows of the batch, or an :class:`~synthguard.EmbeddingStats`
            of it (its image moments and alignment sums; ``text`` must then be ``None``).
        text: ``[m, d]`` unit caption rows, row-aligned with ``image``.
        reference: what the batch is compared with.
        sample: rows for ``coverage`` and ``cmmd`` (default: ``image`` rows, or the
            statistics' bottom-k sample).

    Returns:
        ``alignment_mean``, ``alignment_shift``, ``alignment_variance``, ``variance_ratio``,
        ``vendi_ratio``, ``frechet_distance``, ``coverage``, ``density``, ``cmmd``,
        ``text_variance_ratio``,
        ``text_vendi_ratio`` (NaN when the reference side is empty).
    """
    if isinstance(image, EmbeddingStats):
        if text is not None:
            raise InvalidInputError("text must be None when image is an EmbeddingStats")
        moments: Moments | torch.Tensor = image.image
        text_moments: Moments | torch.Tensor = image.text
        count, total, total_sq = image.alignment_sums
        rows = image.sample("image") if sample is None else as_embeddings("sample", sample)
    else:
        img = as_embeddings("image", image)
        txt = as_embeddings("text", text, dim=img.shape[1])
        cos = (img * txt).sum(dim=1)
        moments, text_moments = img, txt
        count, total, total_sq = img.shape[0], float(cos.sum()), float((cos * cos).sum())
        rows = img if sample is None else as_embeddings("sample", sample)
    ref = reference.moments
    covered, balls_per_row = _balls(rows, reference.coverage_rows, reference.coverage_radii_sq)
    mean, ref_mean = total / count, reference.alignment[1] / reference.alignment[0]
    variance = total_sq / count - mean * mean
    ref_variance = reference.alignment[2] / reference.alignment[0] - ref_mean * ref_mean
    return {
        "alignment_mean": mean,
        "alignment_shift": mean - ref_mean,
        "alignment_variance": max(variance, 0.0) / max(ref_variance, 1e-300),
        "variance_ratio": total_variance(moments) / max(float(torch.trace(ref.covariance)), 1e-300),
        "vendi_ratio": vendi_score(moments) / vendi_score(ref),
        "frechet_distance": frechet_distance(moments, ref),
        "coverage": covered,
        "density": balls_per_row / reference.k,
        "cmmd": _cmmd(rows, reference),
        **_text_ratios(text_moments, reference.text_moments),
    }


def _text_ratios(text: Moments | torch.Tensor, reference: Moments | None) -> dict[str, float]:
    if reference is None:
        return {"text_variance_ratio": math.nan, "text_vendi_ratio": math.nan}
    return {
        "text_variance_ratio": total_variance(text)
        / max(float(torch.trace(reference.covariance)), 1e-300),
        "text_vendi_ratio": vendi_score(text) / vendi_score(reference),
    }


def coverage(image: torch.Tensor, real: torch.Tensor, radii_sq: torch.Tensor) -> float:
    """Share of ``real`` points whose k-NN ball (squared radius ``radii_sq``) holds an ``image``
    row (Naeem et al.); on-sphere counts as outside, as in :func:`~synthguard.functional.prdc`."""
    return _balls(image, real, radii_sq)[0]


def _balls(image: torch.Tensor, real: torch.Tensor, radii_sq: torch.Tensor) -> tuple[float, float]:
    """``(coverage, balls holding an image row on average)`` from one pass over the balls.

    The second, divided by ``k``, is Naeem et al.'s density; it falls when rows leave the real
    manifold even while each stays inside some ball (mild noise, blur).
    """
    if real.shape[0] == 0 or image.shape[0] == 0:
        return math.nan, math.nan
    radii = radii_sq - _TIE_RTOL * (2.0 * float((real * real).sum(1).max()))
    i_sq = (image * image).sum(dim=1)
    r_sq = (real * real).sum(dim=1)
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    inside = 0
    for start in range(0, real.shape[0], DEFAULT_BLOCK_SIZE):
        stop = start + DEFAULT_BLOCK_SIZE
        d2 = sq_dists(real[start:stop], image, r_sq[start:stop], i_sq)
        held = d2 < radii[start:stop, None]
        covered[start:stop] = held.any(dim=1)
        inside += int(held.sum())
    return float(covered.double().mean()), inside / image.shape[0]


def _cmmd(image: torch.Tensor, reference: CollapseReference) -> float:
    """CMMD (biased V-statistic, diagonal included) of ``image`` against the CMMD rows."""
    ref, sigma = reference.cmmd_rows, reference.cmmd_sigma
    if ref.shape[0] == 0:
        return math.nan
    kyy = reference.cmmd_self
    if kyy is None:
        kyy = _mean_kernel(ref, None, sigma)
    return CMMD_SCALE * (
        _mean_kernel(image, None, sigma) + kyy - 2.0 * _mean_kernel(image, ref, sigma)
    )


def _mean_kernel(a: torch.Tensor, b: torch.Tensor | None, sigma: float) -> float:
    """Mean RBF kernel over ``a × b`` (``a × a``, diagonal 1, when ``b`` is ``None``)."""
    other = a if b is None else b
    if a.shape[0] <= DEFAULT_BLOCK_SIZE:  # a guard batch: one matrix (what the nulls used)
        kernel = rbf_kernel(a, other, sigma)
        return float((kernel.fill_diagonal_(1.0) if b is None else kernel).mean())
    # A whole generation (the monitor): blockwise, memory O(block · (m + r)), never m × m.
    total = kernel_sum(a, b, 1.0 / (2.0 * sigma * sigma), DEFAULT_BLOCK_SIZE)
    return total / (a.shape[0] * other.shape[0])
