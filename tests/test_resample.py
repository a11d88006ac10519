"""The stacked null (``batch_null``) against the per-resample definition (``batch_null_exact``).

Every fast path is checked for equality with the exact one: float64 to rounding (coverage and
density exactly), float32 within the documented tolerance, any chunking and any number of
threads bit-identical, and the float64 check falling back where float32 is ill-conditioned.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard as sg
from synthguard.checks import (
    FLOAT32_TOLERANCE,
    OPTIONAL_COLUMNS,
    RESAMPLED_TESTS,
    BatchContext,
    batch_null,
    batch_null_exact,
)
from synthguard.checks import _null as null_module
from synthguard.checks import _resample as resample_module
from synthguard.checks import _stacked as stacked_module
from synthguard.functional import knn_radii
from synthguard.functional.mmd import rbf_kernel
from synthguard.stats import Moments


def _rows(n: int, d: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, d, generator=g, dtype=torch.float64) * 2
    x = centres[torch.randint(0, 4, (n,), generator=g)] + torch.randn(
        n, d, generator=g, dtype=torch.float64
    )
    if rank is not None:  # rows in a rank-r subspace: a singular covariance
        x = x[:, :rank] @ torch.randn(rank, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1)


def _context(
    image: torch.Tensor,
    text: torch.Tensor,
    *,
    accepted: torch.Tensor | None = None,
    k: int = 5,
    coverage_rows: int | None = None,
    cmmd_rows: int = 40,
    tokens: torch.Tensor | None = None,
) -> BatchContext:
    """A context as CalibratedSupport builds one: sums over the accepted rows only."""
    s = image.shape[0]
    accepted = torch.ones(s, dtype=torch.bool) if accepted is None else accepted
    c = s if coverage_rows is None else coverage_rows
    rows, captions = image[accepted], text[accepted]
    cos = (rows * captions).sum(dim=1)
    cmmd = image[:cmmd_rows]
    return BatchContext(
        moments=Moments.from_embeddings(rows),
        alignment=(rows.shape[0], float(cos.sum()), float((cos * cos).sum())),
        accepted=accepted,
        support=image,
        support_text=text,
        k=k,
        coverage_rows=c,
        coverage_radii_sq=knn_radii(image[:c], k) ** 2,
        cmmd_rows=cmmd_rows,
        cmmd_sigma=10.0,
        cmmd_kernel=rbf_kernel(cmmd, cmmd, 10.0).fill_diagonal_(1.0),
        duplicate_cosine=0.9,
        text_moments=Moments.from_embeddings(captions),
        support_tokens=tokens,
    )


def _assert_matches(fast: torch.Tensor, exact: torch.Tensor, rtol: float) -> None:
    for j, name in enumerate(RESAMPLED_TESTS):
        # Where Σ_x is singular (m ≤ d) the definition sums square roots of rounding-level
        # eigenvalues (~1e-8 each), which the stacked path's m × m form avoids.
        tolerance = max(rtol, 1e-6) if name == "frechet_distance" else rtol
        a, b = fast[:, j], exact[:, j]
        assert torch.equal(a.isnan(), b.isnan()), name
        if name in ("coverage", "density", "caption_duplicate_rate", "caption_length_shift"):
            assert torch.equal(a.nan_to_num(), b.nan_to_num()), name  # counts: exactly
            continue
        finite = ~b.isnan()
        if finite.any():
            scale = float(b[finite].abs().max())
            error = float((a[finite] - b[finite]).abs().max())
            assert error <= tolerance * max(scale, 1e-12), (name, error, scale)


@settings(max_examples=25, deadline=None)
@given(
    s=st.integers(60, 160),
    d=st.integers(3, 24),
    fraction=st.sampled_from([0.05, 0.2, 0.5]),
    seed=st.integers(0, 10_000),
    rejected=st.integers(0, 20),
    coverage=st.booleans(),
    with_tokens=st.booleans(),
)
def test_stacked_null_equals_the_definition(
    s: int, d: int, fraction: float, seed: int, rejected: int, coverage: bool, with_tokens: bool
) -> None:
    """Every column, float64, against collapse_metrics per resample; m both < d and ≥ d."""
    image, text = _rows(s, d, seed), _rows(s, d, seed + 1)
    text[5] = text[3]  # duplicate captions for the caption-duplicate column
    text[9] = text[3]
    g = torch.Generator().manual_seed(seed)
    accepted = torch.ones(s, dtype=torch.bool)
    accepted[torch.randperm(s, generator=g)[:rejected]] = False
    tokens = torch.randint(3, 30, (s,), generator=g).double() if with_tokens else None
    ctx = _context(
        image, text, accepted=accepted, tokens=tokens,
        coverage_rows=s // 2 if coverage else None, cmmd_rows=min(40, s),
    )  # fmt: skip
    size = max(2, int(fraction * int(accepted.sum()) // 1))
    size = min(size, int(accepted.sum()) // 2)
    exact = batch_null_exact(ctx, size, 9, seed)
    fast = batch_null(ctx, size, 9, seed, columns=RESAMPLED_TESTS, precision="float64")
    _assert_matches(fast, exact, rtol=1e-9)


def test_float32_is_within_its_tolerance_at_clip_shapes() -> None:
    """d = 64, m above and below d: float32 within FLOAT32_TOLERANCE of the definition."""
    image, text = _rows(600, 64, 0), _rows(600, 64, 1)
    ctx = _context(image, text, cmmd_rows=200)
    for size in (40, 150):
        exact = batch_null_exact(ctx, size, 8, 3)
        fast = batch_null(ctx, size, 8, 3, columns=RESAMPLED_TESTS, precision="float32")
        _assert_matches(fast, exact, rtol=FLOAT32_TOLERANCE)


def test_float64_check_falls_back_where_float32_is_ill_conditioned() -> None:
    """Rows in a rank-6 subspace of d = 32 (a singular covariance): the float32 square roots
    of rounding would move the Fréchet distance, so the check computes in float64."""
    image, text = _rows(300, 32, 0, rank=6), _rows(300, 32, 1)
    ctx = _context(image, text)
    idx = null_module.draws(ctx, 60, 4, 0)
    cpu, tables = torch.device("cpu"), resample_module._Tables.build
    fast, exact = tables(ctx, cpu, torch.float32), tables(ctx, cpu, torch.float64)
    assert not resample_module._float32_agrees(fast, exact, idx, set(RESAMPLED_TESTS))
    fast = batch_null(ctx, 60, 4, 0, columns=RESAMPLED_TESTS, precision="float32")
    same = batch_null(ctx, 60, 4, 0, columns=RESAMPLED_TESTS, precision="float64")
    torch.testing.assert_close(fast, same, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunking_and_threads_do_not_change_a_bit(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stacks of 1, 3 or 64 resamples (64: what runs on CUDA), 1 or 2 threads: one null."""
    image, text = _rows(200, 16, 4), _rows(200, 16, 5)
    ctx = _context(image, text)
    reference = batch_null(ctx, 30, 10, 1, columns=RESAMPLED_TESTS, threads=1)
    monkeypatch.setattr(resample_module, "_CHUNK_CPU", chunk)
    for threads in (1, 2):
        got = batch_null(ctx, 30, 10, 1, columns=RESAMPLED_TESTS, threads=threads)
        torch.testing.assert_close(got, reference, rtol=0, atol=0, equal_nan=True)


def test_exhausted_neighbour_lists_take_the_exact_fallbacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no spare neighbours listed, most balls lose a listed neighbour to a resample: the
    whole-row fallbacks of the kept radii and of the hits must give the same coverage."""
    monkeypatch.setattr(null_module, "_SPARE", 0)
    image, text = _rows(120, 6, 7), _rows(120, 6, 8)
    ctx = _context(image, text)
    exact = batch_null_exact(ctx, 50, 6, 2)
    fast = batch_null(ctx, 50, 6, 2, columns=RESAMPLED_TESTS, precision="float64")
    _assert_matches(fast, exact, rtol=1e-9)


def test_optional_columns_are_computed_when_named_and_added_to_a_cache() -> None:
    reference = sg.Reference.from_embeddings(_rows(300, 16, 0), _rows(300, 16, 1))
    args = {"alpha": 0.05, "resamples": 19, "seed": 5}
    base = reference.batch_null(12, **args)
    for name in OPTIONAL_COLUMNS:
        assert bool(base[:, RESAMPLED_TESTS.index(name)].isnan().all()), name
    assert not reference.has_batch_null(12, **args, columns=["text_vendi_ratio"])
    full = reference.batch_null(12, **args, columns=["text_vendi_ratio"])
    at = RESAMPLED_TESTS.index("text_vendi_ratio")
    assert not bool(full[:, at].isnan().any())
    others = [j for j in range(len(RESAMPLED_TESTS)) if j != at]
    torch.testing.assert_close(full[:, others], base[:, others], rtol=0, atol=0, equal_nan=True)
    assert reference.has_batch_null(12, **args, columns=["text_vendi_ratio"])
    alone = batch_null(reference.batch_context(0.05), 12, 19, 5, columns=RESAMPLED_TESTS, threads=1)
    assert math.isclose(float(alone[:, at].sum()), float(full[:, at].sum()), rel_tol=1e-12)
    with pytest.raises(sg.InvalidInputError, match="columns"):
        reference.batch_null(12, **args, columns=["coverge"])


def test_batch_sizes_at_build_precompute_what_a_guard_reads(tmp_path: Path) -> None:
    """Reference.from_embeddings(batch_sizes=...) computes the nulls a default guard needs
    for such batches; they survive save/load, and a check reads them (null_cached)."""
    rows = _rows(560, 12, 2)
    image, text = rows[:500], (rows + 0.3 * _rows(560, 12, 3))[:500]
    batch = rows[500:], (rows + 0.3 * _rows(560, 12, 3))[500:]
    ref = sg.Reference.from_embeddings(image, text, batch_sizes=[60])
    loaded = sg.Reference.load(ref.save(tmp_path / "ahead.sgref"))
    report = sg.Guard(loaded).check_embeddings(*batch)
    assert report.rows_tested in (45, 54) and report.null_cached is True, report.summary()
    cold = sg.Reference.from_embeddings(image, text)
    assert sg.Guard(cold).check_embeddings(*batch).null_cached is False
    with pytest.raises(sg.InvalidInputError, match="batch_sizes"):
        cold.calibrate([1])
    with pytest.raises(sg.InvalidInputError, match="batch_sizes"):
        cold.calibrate(64)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(low=st.floats(-1.0 / 32.0, 0.0), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_the_kernels_taylor_expm1_is_under_its_dtypes_rounding(
    low: float, dtype: torch.dtype
) -> None:
    """CMMD's ``exp(z) − 1`` on ``|z| ≤ 1/32`` against ``math.expm1``, relative to ``z``:
    degree 4 in float32 within a few rounding units (6e-8), degree 6 in float64 within the
    documented 2e-13 (the next terms, ``z⁵/5!`` and ``z⁷/7!``, bound the remainders)."""
    z = torch.linspace(low, 0.0, 257, dtype=torch.float64)
    got = stacked_module._expm1(z.to(dtype), small=True).double()
    want = torch.tensor([math.expm1(v) for v in z.to(dtype).double().tolist()], dtype=torch.float64)
    bound = 4 * torch.finfo(torch.float32).eps if dtype == torch.float32 else 2e-13
    assert bool(((got - want).abs() <= bound * want.abs()).all())
