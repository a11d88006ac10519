"""precision / recall / density / coverage against the `prdc` package and brute force.

Tie-free data is compared with the package. Exact copies of real samples put fakes exactly on
k-NN spheres, where the package's answer depends on how sklearn's chunked matmuls round; there
the reference is a brute-force computation with per-pair distances (``scipy cdist``), in which
a copy's distances are bit-identical to the radii they meet, so ties resolve as in exact
arithmetic: on the sphere is outside.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import synthguard.functional as F
from synthguard import InvalidInputError

prdc_pkg = pytest.importorskip("prdc")


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the sample sizes
        out = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {key: float(value) for key, value in out.items()}


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The package's formulas on per-pair (position-independent) distances."""
    radii_real = np.sort(cdist(real, real), axis=1)[:, k]
    radii_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)
    inside = d < radii_real[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d < radii_fake[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d.min(axis=1) < radii_real).mean(),
    }


def check_equal(ours: F.PRDCResult | dict[str, float], ref: dict[str, float]) -> None:
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d", "shift", "k"),
    [(300, 200, 16, 0.0, 5), (250, 400, 8, 0.7, 5), (120, 90, 32, 0.3, 3), (60, 60, 2, 2.0, 1)],
)
def test_prdc_equals_package(n_real: int, n_fake: int, d: int, shift: float, k: int) -> None:
    rng = np.random.default_rng(n_real + d)
    real = rng.normal(size=(n_real, d))
    fake = rng.normal(size=(n_fake, d)) * 1.3 + shift
    ref = reference_prdc(real, fake, k)
    check_equal(brute_force_prdc(real, fake, k), ref)  # the two references agree without ties
    check_equal(F.prdc(real, fake, k=k, block_size=64), ref)
    check_equal(F.prdc(torch.from_numpy(real), torch.from_numpy(fake), k=k), ref)


@pytest.mark.parametrize("block_size", [5, 17, 1024])
def test_prdc_with_copies_resolves_ties_exactly(block_size: int) -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 24))
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    near = rng.normal(size=(80, 24)) * 0.05 + real[60:140]
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    fake = np.vstack([real[:50], real[:10], near])  # bit-exact copies, some twice
    check_equal(F.prdc(real, fake, block_size=block_size), brute_force_prdc(real, fake, 5))
    flipped = real[::-1].copy()
    check_equal(F.prdc(real, flipped, block_size=block_size), brute_force_prdc(real, flipped, 5))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n_real=st.integers(6, 60),
    n_fake=st.integers(6, 60),
    block=st.integers(1, 70),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_prdc_blockwise_equals_dense(
    n_real: int, n_fake: int, block: int, k: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(n_real, 5)), rng.normal(size=(n_fake, 5)) + 0.3
    copies = rng.integers(0, min(n_real, n_fake) + 1)  # memorised samples: exact ties
    fake[:copies] = real[rng.choice(n_real, copies, replace=False)]
    dense = F.prdc(real, fake, k=k, block_size=10**6)
    assert F.prdc(real, fake, k=k, block_size=block) == dense
    check_equal(dense, brute_force_prdc(real, fake, k))
    if copies == 0:
        check_equal(dense, reference_prdc(real, fake, k))


def test_knn_radii_brute_force() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 7))
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    for k in (1, 3, 5):
        expected = np.sort(dist, axis=1)[:, k]  # column 0 is the point itself
        got = F.knn_radii(x, k=k, block_size=16).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_memorised_copies_give_exact_values() -> None:
    # fake = real in another order: every real ball holds its centre and its k-1 nearer
    # neighbours, never the k-th (on the sphere), whatever the rounding of the matmuls.
    real = np.random.default_rng(4).normal(size=(300, 64))
    for block in (7, 64, 1000):
        result = F.prdc(real, real[::-1].copy(), k=5, block_size=block)
        assert result.to_dict() == {
            "precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0, "k": 5
        }  # fmt: skip


def test_closed_forms() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(100, 4))
    same = F.prdc(real, real.copy())
    assert (same.precision, same.recall, same.coverage) == (1.0, 1.0, 1.0)
    far = F.prdc(real, real + 1e3)
    assert far.to_dict() == {
        "precision": 0.0,
        "recall": 0.0,
        "density": 0.0,
        "coverage": 0.0,
        "k": 5,
    }
    assert list(far.keys()) == ["precision", "recall", "density", "coverage"]
    with pytest.raises(KeyError):
        far["k_nearest"]


def test_result_is_frozen() -> None:
    result = F.prdc(np.eye(8), np.eye(8))
    with pytest.raises(Exception, match="frozen"):
        result.precision = 0.5


@pytest.mark.parametrize(
    ("real", "fake", "kwargs", "match"),
    [
        (np.zeros((5, 3)), np.zeros((10, 3)), {}, r"real must have more than k=5 rows, got 5"),
        (
            np.zeros((10, 3)),
            np.zeros((3, 3)),
            {"k": 3},
            r"fake must have more than k=3 rows, got 3",
        ),
        (np.zeros((10, 3)), np.zeros((10, 4)), {}, r"same dimension d, got 3 and 4"),
        (np.zeros((10,)), np.zeros((10, 3)), {}, r"real must be a 2-D array"),
        (np.zeros((10, 3)), np.zeros((10, 3)), {"k": 0}, r"k must be >= 1, got 0"),
        (np.zeros((10, 3)), np.zeros((10, 3)), {"block_size": 0}, r"block_size must be >= 1"),
    ],
)
def test_errors(real: np.ndarray, fake: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        F.prdc(real, fake, **kwargs)


def test_nan_row_is_named() -> None:
    fake = np.zeros((10, 3))
    fake[7, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"fake must be finite; rows \[7\]"):
        F.prdc(np.zeros((10, 3)), fake)
