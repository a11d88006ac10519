"""Drift metrics: Fréchet distance vs pytorch-fid's scipy formula, centroid shift, modality gap
and label drift vs scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

import synthguard.functional as F
from synthguard import InvalidInputError
from synthguard.stats import EmbeddingStats, Moments


def pytorch_fid_distance(x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """``calculate_frechet_distance`` of pytorch-fid (mseitzer/pytorch-fid, fid_score.py)."""
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    sigma1, sigma2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(("n", "m", "d"), [(400, 300, 8), (2000, 1500, 64), (300, 300, 2)])
def test_frechet_distance_matches_pytorch_fid(n: int, m: int, d: int) -> None:
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ a
    y = rng.normal(size=(m, d)) * 0.8 + 0.1
    expected = pytorch_fid_distance(x, y)
    assert F.frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert F.frechet_distance(y, x) == pytest.approx(expected, rel=1e-8)
    stats_x = EmbeddingStats.from_embeddings(x, sample_size=0)
    assert F.frechet_distance(stats_x, torch.from_numpy(y)) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_closed_form_diagonal_gaussians() -> None:
    # For commuting covariances FD = ‖Δμ‖² + Σ (σ_x − σ_y)², with the sample moments.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 3)) * [1.0, 2.0, 3.0]
    y = rng.normal(size=(5000, 3)) * [1.0, 1.0, 1.0] + [1.0, 0.0, 0.0]
    assert F.frechet_distance(x, y) == pytest.approx(1 + 1 + 4, rel=0.05)
    assert F.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10)
    assert F.frechet_distance(x, x + np.array([3.0, 4.0, 0.0])) == pytest.approx(25.0, rel=1e-10)


def test_frechet_distance_rank_deficient_has_no_complex_part() -> None:
    # n < d: singular covariances, where sqrtm of the product is ill-conditioned.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(25, 64)) + 0.05
    ours = F.frechet_distance(x, y)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr((Σx Σy)^½) = Σ sqrt(eig(Σx Σy)); the eigenvalues are real and >= 0 in exact arithmetic.
    eig = np.clip(np.linalg.eigvals(sx @ sy).real, 0, None)
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(sx) + np.trace(sy) - 2 * np.sqrt(eig).sum()
    assert ours == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(ours) and ours >= 0


def test_frechet_distance_singular_reference_covariance() -> None:
    # A constant coordinate makes Σ_y singular (no Cholesky factor): the eigh path runs.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(200, 6)) * 1.5
    y[:, 2] = 0.25
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eig = np.clip(np.linalg.eigvals(sx @ sy).real, 0, None)
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(sx) + np.trace(sy) - 2 * np.sqrt(eig).sum()
    # The zero eigenvalue comes out as ±1e-16 in any implementation; its square root adds
    # √eps-sized noise (~1e-8), hence rel=1e-7.
    assert F.frechet_distance(x, y) == pytest.approx(expected, rel=1e-7)
    assert F.frechet_distance(y, x) == pytest.approx(expected, rel=1e-7)
    assert F.frechet_distance(x, y) == pytest.approx(pytorch_fid_distance(x, y), rel=1e-6)


def test_centroid_shift_closed_form() -> None:
    x = np.array([[2.0, 0.0], [0.0, 0.0]])  # centroid (1, 0)
    y = np.array([[0.0, 3.0]])  # centroid (0, 3)
    shift = F.centroid_shift(x, y)
    assert shift.distance == pytest.approx(np.sqrt(10.0))
    assert shift.cosine_distance == pytest.approx(1.0)
    assert F.centroid_shift(x, 5 * x).cosine_distance == pytest.approx(0.0, abs=1e-15)
    assert shift.to_dict() == {"distance": shift.distance, "cosine_distance": 1.0}
    stats = EmbeddingStats.from_embeddings(x)
    assert F.centroid_shift(stats, Moments.from_embeddings(y)) == shift
    with pytest.raises(InvalidInputError, match="centroids must be non-zero"):
        F.centroid_shift(np.array([[1.0, 0.0], [-1.0, 0.0]]), y)
    with pytest.raises(InvalidInputError, match="same dimension d, got 2 and 3"):
        F.centroid_shift(x, EmbeddingStats.from_embeddings(np.ones((2, 3))))


def test_modality_gap() -> None:
    rng = np.random.default_rng(2)
    img, txt = rng.normal(size=(50, 6)) + 1.0, rng.normal(size=(50, 6))
    expected = np.linalg.norm(img.mean(0) - txt.mean(0))
    assert F.modality_gap(img, txt) == pytest.approx(expected, rel=1e-12)
    assert F.modality_gap(img, txt[:20]) == pytest.approx(
        np.linalg.norm(img.mean(0) - txt[:20].mean(0)), rel=1e-12
    )
    stats = EmbeddingStats.from_embeddings(img, txt).update(image_emb=img[:7])  # unpaired rows
    assert F.modality_gap(stats) == pytest.approx(expected, rel=1e-12)  # gap over pairs only
    with pytest.raises(InvalidInputError, match="txt is required"):
        F.modality_gap(img)
    with pytest.raises(InvalidInputError, match="same dimension d, got 6 and 5"):
        F.modality_gap(img, txt[:, :5])
    with pytest.raises(InvalidInputError, match="at least 1 image–caption pair"):
        F.modality_gap(EmbeddingStats(6).update(image_emb=img))


@pytest.mark.parametrize(
    ("a", "b"),
    [([10, 20, 5], [12, 15, 9]), ([100, 0, 50, 0], [80, 10, 70, 0]), ([3, 1], [1, 3])],
)
def test_label_drift_matches_scipy(a: list[int], b: list[int]) -> None:
    out = F.label_drift(a, b)
    seen = [i for i in range(len(a)) if a[i] + b[i] > 0]
    table = np.array([[a[i] for i in seen], [b[i] for i in seen]])
    chi2, p, dof, _ = chi2_contingency(table, correction=False)
    assert out.chi2 == pytest.approx(chi2, rel=1e-12)
    assert out.p_value == pytest.approx(p, rel=1e-10)
    assert out.dof == dof
    assert out.js_divergence == pytest.approx(jensenshannon(a, b, base=2) ** 2, rel=1e-10)


def test_label_drift_closed_forms_and_stats() -> None:
    same = F.label_drift(np.array([5.0, 5.0]), torch.tensor([50, 50]))
    assert (same.js_divergence, same.chi2, same.p_value, same.dof) == (0.0, 0.0, 1.0, 1)
    disjoint = F.label_drift([10, 0], [0, 10])
    assert disjoint.js_divergence == pytest.approx(1.0)  # maximal, in bits
    single = F.label_drift([4, 0], [7, 0])
    assert (single.chi2, single.p_value, single.dof) == (0.0, 1.0, 0)
    emb = np.eye(4)
    sa = EmbeddingStats.from_embeddings(emb, labels=[0, 0, 1, 2], num_labels=3)
    sb = EmbeddingStats.from_embeddings(emb, labels=[2, 2, 1, 2], num_labels=3)
    assert F.label_drift(sa, sb) == F.label_drift([2, 1, 1], [0, 1, 3])


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([1, 2], [1, 2, 3], "same number of classes, got 2 and 3"),
        ([1, -2], [1, 2], "counts_a must be non-negative"),
        ([0, 0], [1, 2], "counts_a must have a positive total"),
        ([[1, 2]], [1, 2], "counts_a must be a 1-D array"),
        ([1, float("nan")], [1, 2], "counts_a must be finite"),
    ],
)
def test_label_drift_errors(a: list, b: list, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        F.label_drift(a, b)
    with pytest.raises(InvalidInputError, match="without num_labels"):
        F.label_drift(EmbeddingStats(2), [1, 2])


def test_frechet_distance_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"x must have at least 2 rows, got 1"):
        F.frechet_distance(np.ones((1, 3)), np.ones((5, 3)))
    with pytest.raises(InvalidInputError, match=r"same dimension d, got 3 and 4"):
        F.frechet_distance(np.ones((5, 3)), EmbeddingStats.from_embeddings(np.ones((5, 4))))
