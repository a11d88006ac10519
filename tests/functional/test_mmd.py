"""CMMD, unbiased MMD² and the permutation test against brute-force n×n computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from scipy.spatial.distance import cdist

import synthguard.functional as F
from synthguard import InvalidInputError


def rbf(a: np.ndarray, b: np.ndarray, sigma: float = 10.0) -> np.ndarray:
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))


def cmmd_reference(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    """google-research/cmmd ``distance.mmd``: 1000 · (mean Kxx + mean Kyy − 2 mean Kxy)."""
    return 1000 * (rbf(x, x, sigma).mean() + rbf(y, y, sigma).mean() - 2 * rbf(x, y, sigma).mean())


def mmd2_u_reference(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    m, n = len(x), len(y)
    kxx, kyy = rbf(x, x, sigma), rbf(y, y, sigma)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * rbf(x, y, sigma).mean()
    )


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def clip_like() -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in d=32 with a small shift between the two sets, like CLIP embeddings."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=32)
    x = unit(rng.normal(size=(180, 32)) + base)
    y = unit(rng.normal(size=(150, 32)) + base + 0.4 * rng.normal(size=32))
    return x, y


def test_cmmd_matches_reference_formula(clip_like: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = clip_like
    assert F.cmmd(x, y) == pytest.approx(cmmd_reference(x, y), rel=1e-9)
    assert F.cmmd(x, y, sigma=0.7, block_size=7) == pytest.approx(
        cmmd_reference(x, y, 0.7), rel=1e-9
    )
    assert F.cmmd(x, x) == pytest.approx(0.0, abs=1e-12)
    assert F.cmmd(torch.from_numpy(x), y) == F.cmmd(x, y)


def test_mmd2_unbiased_matches_brute_force(clip_like: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = clip_like
    assert F.mmd2_unbiased(x, y) == pytest.approx(mmd2_u_reference(x, y), rel=1e-9)
    assert F.mmd2_unbiased(x, y, sigma=0.5, block_size=13) == pytest.approx(
        mmd2_u_reference(x, y, 0.5), rel=1e-9
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    m=st.integers(2, 30), n=st.integers(2, 30), block=st.integers(1, 40), seed=st.integers(0, 999)
)
def test_blockwise_equals_dense(m: int, n: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(m, 4)), rng.normal(size=(n, 4)) + 0.5
    for fn in (F.cmmd, F.mmd2_unbiased):
        dense = fn(x, y, sigma=2.0, block_size=10**6)
        assert fn(x, y, sigma=2.0, block_size=block) == pytest.approx(dense, rel=1e-10, abs=1e-13)
    assert F.mmd2_unbiased(x, y, sigma=2.0) == pytest.approx(
        mmd2_u_reference(x, y, 2.0), rel=1e-9, abs=1e-13
    )


def naive_permutation_p(
    x: np.ndarray, y: np.ndarray, n_perm: int, seed: int, sigma: float
) -> float:
    """The documented procedure one split at a time: same permutations, brute-force statistic."""
    z, m = np.vstack([x, y]), len(x)
    observed = mmd2_u_reference(x, y, sigma)
    order = torch.rand(n_perm, len(z), generator=torch.Generator().manual_seed(seed)).argsort(1)
    exceed = 0
    for perm in order.numpy():
        mask = np.zeros(len(z), bool)
        mask[perm[:m]] = True
        exceed += mmd2_u_reference(z[mask], z[~mask], sigma) >= observed - 1e-12
    return (exceed + 1) / (n_perm + 1)


def test_permutation_test_matches_naive_loop(clip_like: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = clip_like[0][:25], clip_like[0][25:45]  # same distribution: a non-trivial p-value
    stat, p = F.mmd_permutation_test(x, y, n_permutations=199, seed=3, block_size=8)
    assert stat == pytest.approx(F.mmd2_unbiased(x, y), rel=1e-9)
    assert p == pytest.approx(naive_permutation_p(x, y, 199, 3, 10.0))
    assert 0.01 < p < 1.0


def test_permutation_test_clear_shift_gives_minimal_p(
    clip_like: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = clip_like
    result = F.mmd_permutation_test(x, y, n_permutations=500, seed=1)
    assert result.p_value == 1 / 501
    assert result.statistic == pytest.approx(F.mmd2_unbiased(x, y), rel=1e-9)
    assert result.to_dict() == {"statistic": result.statistic, "p_value": 1 / 501}


def test_permutation_test_null_p_values_are_uniform() -> None:
    # Under H0 the permutation p-value is uniform on {1/(P+1), ..., 1}: P(p <= 0.05) = 0.05.
    n_runs, n_perm = 200, 99
    pvalues = []
    for seed in range(n_runs):
        rng = np.random.default_rng(10_000 + seed)
        z = unit(rng.normal(size=(40, 8)) + 1.0)
        pvalues.append(F.mmd_permutation_test(z[:20], z[20:], n_permutations=n_perm, seed=seed)[1])
    rejections = sum(p <= 0.05 for p in pvalues)
    # Binomial(200, 0.05): mean 10, sd 3.1; [2, 20] is beyond ±3 sd.
    assert 2 <= rejections <= 20
    assert scipy_stats.kstest(pvalues, "uniform").pvalue > 0.001


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    m=st.integers(2, 12),
    n=st.integers(2, 12),
    n_perm=st.integers(1, 60),
    shift=st.floats(0.0, 3.0),
    seed=st.integers(0, 999),
)
def test_p_value_in_unit_interval(m: int, n: int, n_perm: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(m, 3)), rng.normal(size=(n, 3)) + shift
    stat, p = F.mmd_permutation_test(x, y, n_permutations=n_perm, seed=seed, sigma=1.0)
    assert 1 / (n_perm + 1) <= p <= 1.0
    assert (p * (n_perm + 1)) == pytest.approx(round(p * (n_perm + 1)))
    assert stat == pytest.approx(mmd2_u_reference(x, y, 1.0), rel=1e-8, abs=1e-12)


def test_permutation_test_is_deterministic_per_seed(
    clip_like: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = clip_like[0][:30], clip_like[0][30:60]
    first = F.mmd_permutation_test(x, y, n_permutations=99, seed=7)
    assert F.mmd_permutation_test(torch.from_numpy(x), y, n_permutations=99, seed=7) == first
    assert F.mmd_permutation_test(x, y, n_permutations=99, seed=7, block_size=5) == pytest.approx(
        first
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: F.mmd2_unbiased(np.ones((1, 3)), np.ones((4, 3))),
            r"x must have at least 2 rows, got 1",
        ),
        (lambda: F.cmmd(np.ones((4, 3)), np.ones((4, 2))), r"same dimension d, got 3 and 2"),
        (
            lambda: F.cmmd(np.ones((4, 3)), np.ones((4, 3)), sigma=0.0),
            r"sigma must be > 0.0, got 0.0",
        ),
        (
            lambda: F.cmmd(np.ones((4, 3)), np.ones((4, 3)), sigma=float("nan")),
            r"sigma must be finite",
        ),
        (
            lambda: F.mmd_permutation_test(np.ones((4, 3)), np.ones((4, 3)), n_permutations=0),
            r"n_permutations must be >= 1, got 0",
        ),
        (
            lambda: F.mmd_permutation_test(np.ones((4, 3)), np.ones((4, 3)), seed=-1),
            r"seed must be >= 0",
        ),
        (
            lambda: F.cmmd(np.ones((4, 3)), np.ones((4, 3)), block_size=2.5),  # type: ignore[arg-type]
            r"block_size must be an integer",
        ),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]
