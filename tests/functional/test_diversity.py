"""Diversity metrics against closed forms, brute-force n×n computations and `vendi-score`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard.functional as F
from synthguard import InvalidInputError
from synthguard.stats import EmbeddingStats, Moments

vendi = pytest.importorskip("vendi_score.vendi")
# vendi-score 0.0.3 touches the deprecated scipy.sparse.csr namespace on every call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:vendi_score.*")


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vendi_nxn(x: np.ndarray) -> float:
    """exp(−Σ λ log λ) with λ the eigenvalues of the n×n cosine kernel K/n."""
    u = unit_rows(x)
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 0]
    return math.exp(-(lam * np.log(lam)).sum())


@pytest.mark.parametrize(("n", "d"), [(200, 16), (40, 64), (5, 3), (1, 4)])
def test_vendi_equals_nxn_and_package(n: int, d: int) -> None:
    x = np.random.default_rng(n * d).normal(size=(n, d))
    ours = F.vendi_score(x)
    assert ours == pytest.approx(vendi_nxn(x), rel=1e-10)
    u = unit_rows(x)
    assert ours == pytest.approx(vendi.score_K(u @ u.T), rel=1e-10)  # package, n×n kernel
    assert ours == pytest.approx(vendi.score_dual(x), rel=1e-10)  # package, normalising dual
    assert ours == pytest.approx(F.vendi_score(torch.from_numpy(x).float()), rel=1e-5)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 12),
    clusters=st.integers(1, 5),
    seed=st.integers(0, 10**6),
)
def test_vendi_dual_equals_nxn_property(n: int, d: int, clusters: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.01 * rng.normal(size=(n, d))
    ours = F.vendi_score(x)
    assert ours == pytest.approx(vendi_nxn(x), rel=1e-8, abs=1e-8)
    assert 1.0 - 1e-9 <= ours <= min(n, d) + 1e-9
    stats = EmbeddingStats.from_embeddings(unit_rows(x), sample_size=0)
    assert F.vendi_score(stats) == pytest.approx(ours, rel=1e-8, abs=1e-8)


def test_vendi_closed_forms() -> None:
    assert F.vendi_score(torch.eye(7)) == pytest.approx(7.0, rel=1e-12)  # orthogonal samples
    assert F.vendi_score(np.ones((50, 3))) == pytest.approx(1.0, rel=1e-12)  # one "species"
    # Two equally frequent orthogonal species: exactly 2, whatever the repeat count.
    x = np.vstack([np.tile([1.0, 0.0], (30, 1)), np.tile([0.0, 5.0], (30, 1))])
    assert F.vendi_score(x) == pytest.approx(2.0, rel=1e-12)


def test_vendi_from_stats_requires_unit_rows() -> None:
    x = np.random.default_rng(0).normal(size=(30, 4)) * 3.0
    with pytest.raises(InvalidInputError, match=r"unit-norm rows.*L2-normalise"):
        F.vendi_score(EmbeddingStats.from_embeddings(x))
    moments = Moments.from_embeddings(unit_rows(x))
    assert F.vendi_score(moments) == pytest.approx(F.vendi_score(x), rel=1e-12)


def test_total_variance_matches_numpy() -> None:
    x = np.random.default_rng(4).normal(size=(500, 20)) * np.linspace(0.1, 2.0, 20)
    expected = np.trace(np.cov(x, rowvar=False, ddof=0))
    assert F.total_variance(x) == pytest.approx(expected, rel=1e-12)
    assert F.total_variance(EmbeddingStats.from_embeddings(x)) == pytest.approx(expected, rel=1e-12)
    assert F.total_variance(np.ones((3, 2))) == 0.0


def test_mean_pairwise_cosine_brute_force() -> None:
    x = np.random.default_rng(5).normal(size=(150, 8)) + 0.5
    u = unit_rows(x)
    cos = u @ u.T
    expected = (cos.sum() - np.trace(cos)) / (150 * 149)
    assert F.mean_pairwise_cosine(x) == pytest.approx(expected, rel=1e-11)
    stats = EmbeddingStats.from_embeddings(u)
    assert F.mean_pairwise_cosine(stats) == pytest.approx(expected, rel=1e-11)
    assert F.mean_pairwise_cosine(np.tile([0.0, 2.0], (4, 1))) == pytest.approx(1.0)
    assert F.mean_pairwise_cosine(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)


def test_effective_rank_matches_numpy_spectrum() -> None:
    x = np.random.default_rng(6).normal(size=(400, 10)) * np.array(
        [5, 4, 3, 2, 1, 1, 1, 0.5, 0.1, 0.01]
    )
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False, ddof=0))
    p = lam / lam.sum()
    expected = math.exp(-(p * np.log(p)).sum())
    assert F.effective_rank(x) == pytest.approx(expected, rel=1e-10)
    assert F.effective_rank(EmbeddingStats.from_embeddings(x)) == pytest.approx(expected, rel=1e-10)


def test_effective_rank_closed_forms() -> None:
    # Isotropic on k axes: exactly k; all rows equal: zero covariance, rank 0.
    axes = np.vstack([np.eye(4), -np.eye(4)])
    assert F.effective_rank(axes) == pytest.approx(4.0, rel=1e-12)
    assert F.effective_rank(np.ones((6, 3))) == 0.0


def test_metrics_reject_too_few_rows_and_nan() -> None:
    with pytest.raises(InvalidInputError, match=r"x must have at least 2 rows, got 1"):
        F.mean_pairwise_cosine(np.ones((1, 3)))
    bad = np.ones((4, 3))
    bad[2, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"x must be finite; rows \[2\]"):
        F.vendi_score(bad)
    with pytest.raises(InvalidInputError, match=r"rows \[1\] are zero"):
        F.vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]))
    text_only = EmbeddingStats(3).update(text_emb=np.eye(3))
    with pytest.raises(InvalidInputError, match=r"pass x.text"):
        F.total_variance(text_only)
    assert F.total_variance(text_only.text) == pytest.approx(F.total_variance(np.eye(3)))
