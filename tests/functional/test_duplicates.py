"""Near and exact duplicates against brute-force n×n comparisons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard.functional as F
from synthguard import InvalidInputError


def brute_near(x: np.ndarray, tau: float, y: np.ndarray | None = None) -> list[list[int]]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    if y is None:
        cos = u @ u.T
        return [[i, j] for i in range(len(x)) for j in range(i + 1, len(x)) if cos[i, j] >= tau]
    v = y / np.linalg.norm(y, axis=1, keepdims=True)
    cos = u @ v.T
    return [[i, j] for i in range(len(x)) for j in range(len(y)) if cos[i, j] >= tau]


def with_copies(rng: np.random.Generator, n: int, d: int, n_copies: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    src = rng.integers(0, n, n_copies)
    dst = rng.choice(n, n_copies, replace=False)
    x[dst] = x[src] * rng.uniform(0.5, 2.0, (n_copies, 1)) + 1e-3 * rng.normal(size=(n_copies, d))
    return x


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(0, 40),
    m=st.integers(0, 25),
    block=st.integers(1, 50),
    tau=st.sampled_from([-1.0, 0.0, 0.5, 0.95, 0.999]),
    seed=st.integers(0, 999),
)
def test_blockwise_equals_brute_force(n: int, m: int, block: int, tau: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = with_copies(rng, n, 6, n // 4)
    y = np.vstack([x[: m // 2], rng.normal(size=(m - m // 2, 6))])
    within = F.near_duplicates(x, tau, block_size=block)
    assert within.dtype == torch.int64 and within.shape[1] == 2
    assert within.tolist() == brute_near(x, tau)
    assert F.near_duplicates(x, tau, y, block_size=block).tolist() == brute_near(x, tau, y)


def test_finds_planted_copies() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(500, 32))
    batch = np.vstack([rng.normal(size=(100, 32)), ref[[3, 77]] * 1.01])
    assert F.near_duplicates(batch, 0.99, ref, block_size=16).tolist() == [[100, 3], [101, 77]]
    assert F.near_duplicates(torch.from_numpy(batch), 0.99).tolist() == []


def test_exact_duplicates_brute_force() -> None:
    rng = np.random.default_rng(1)
    items = [bytes(rng.integers(0, 3, 2).astype(np.uint8)) for _ in range(60)]
    expected = [[i, j] for i in range(60) for j in range(i + 1, 60) if items[i] == items[j]]
    assert F.exact_duplicates(items).tolist() == expected
    ref = [*items[:5], b"zz"]
    cross = [[i, j] for i in range(60) for j in range(6) if items[i] == ref[j]]
    assert F.exact_duplicates(items, ref).tolist() == cross


def test_exact_duplicates_on_rows_and_kinds() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    assert F.exact_duplicates(x).tolist() == [[0, 2]]
    assert F.exact_duplicates(torch.from_numpy(x)).tolist() == [[0, 2]]
    assert F.exact_duplicates(["a", "b"]).shape == (0, 2)
    # Content hashes include the type: text is not bytes, float32 is not float64.
    assert F.content_hash("a") != F.content_hash(b"a")
    assert F.content_hash(np.zeros(2, np.float32)) != F.content_hash(np.zeros(2))
    assert F.content_hash(torch.zeros(2)) == F.content_hash(np.zeros(2, np.float32))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: F.near_duplicates(np.ones((3, 2)), 1.5), r"threshold must be <= 1.0, got 1.5"),
        (lambda: F.near_duplicates(np.ones((3, 2)), 0.9, np.ones((2, 3))), r"same dimension d"),
        (
            lambda: F.near_duplicates(np.ones((3, 2)), 0.9, block_size=-1),
            r"block_size must be >= 1",
        ),
        (lambda: F.exact_duplicates("abc"), r"items must be a sequence of items"),
        (lambda: F.exact_duplicates([1, 2]), r"items must be str, bytes, numpy arrays or tensors"),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]
