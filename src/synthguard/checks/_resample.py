"""The resampled null, fast: the statistics of many resamples at once, as tensor operations.

:func:`~synthguard.checks.batch_null_exact` computes each resample's statistics through
:func:`~synthguard.functional.collapse_metrics`, the public definition (one resample, every
row rebuilt). This module computes the same numbers from what the resamples share:

- a resample's moments are subtracted from the accepted support's (exact sums, float64);
- coverage and density read the precomputed pairs within each ball's widest listed neighbour
  (:attr:`BatchContext.coverage_members`) instead of ``c × m`` distances;
- CMMD's cross and reference terms come from precomputed kernel sums; only the resample's own
  ``m × m`` kernel is formed;
- caption duplicates come from the support's precomputed duplicate pairs;
- resamples are stacked (``bmm``, batched ``eigvalsh`` and ``cholesky``), so the same code runs
  on CUDA, and on CPU in ``threads`` worker threads of one torch thread each.

The eigendecompositions, Gram and kernel matrices run in ``precision`` (float32 by default:
2× faster on CPU); sums, means and traces stay float64. The float32 values match the float64
ones to about 1e-5 relative (tests/test_resample.py), far below the null's Monte-Carlo
resolution; docs/design.md, "Decision rules", says what that means for p-values.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from synthguard.checks._batch import RESAMPLED_TESTS
from synthguard.checks._null import BatchContext, draws
from synthguard.checks._stacked import caption_duplicates, cmmd, coverage
from synthguard.functional.drift import _psd_factor, _trace_sqrt_product

__all__ = ["FLOAT32_TOLERANCE", "OPTIONAL_COLUMNS", "Precision", "batch_null"]

Precision = Literal["float32", "float64"]
#: Columns computed only when asked for (their cost is a large share of a resample's).
OPTIONAL_COLUMNS = frozenset({"text_vendi_ratio", "caption_duplicate_rate"})
#: Largest float32 error (relative to a column's scale) the float64 check accepts; the
#: measured errors are about 1e-7 (Vendi) to 1e-5 (CMMD).
FLOAT32_TOLERANCE = 1e-4
#: Resamples per stacked step (CPU: per worker task; CUDA: per kernel launch set).
_CHUNK_CPU, _CHUNK_CUDA = 4, 64


def batch_null(
    ctx: BatchContext,
    size: int,
    resamples: int,
    seed: int,
    *,
    columns: Collection[str] | None = None,
    precision: Precision = "float32",
    device: str | torch.device = "cpu",
    threads: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """``[R, K]`` resampled null of the distribution tests (columns: RESAMPLED_TESTS): ``size``
    rows drawn from the accepted support, against the accepted support without them; the values
    of :func:`~synthguard.checks.batch_null_exact` (float64 to rounding; float32 to ~1e-5).

    Args:
        ctx: what the batch tests compare with.
        size: rows per resample.
        resamples: ``R``.
        seed: the draws' seed (the same draws as the exact path).
        columns: tests to compute (default: all but :data:`OPTIONAL_COLUMNS`); the others
            are NaN.
        precision: dtype of the eigendecompositions and Gram matrices.
        device: where the resamples are computed (``"cuda"`` when an encoder runs there).
        threads: CPU worker threads, each with one torch thread (ignored on CUDA).
        progress: show a progress bar (after a second).
    """
    wanted = set(RESAMPLED_TESTS) - OPTIONAL_COLUMNS if columns is None else set(columns)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # the worker thread has its own default
        device = torch.device("cuda", torch.cuda.current_device())
    indices = draws(ctx, size, resamples, seed)
    step = _CHUNK_CUDA if device.type == "cuda" else _CHUNK_CPU
    tables = _Tables.build(ctx, device, getattr(torch, precision))
    if tables.dtype == torch.float32:
        exact = _Tables.build(ctx, device, torch.float64)
        if not _float32_agrees(tables, exact, indices[:step].to(device), wanted):
            tables = exact
    out = torch.full((resamples, len(RESAMPLED_TESTS)), math.nan, dtype=torch.float64)

    def task(start: int) -> None:
        values = _values(tables, indices[start : start + step].to(device), wanted)
        for name, column in values.items():
            out[start : start + step, RESAMPLED_TESTS.index(name)] = column.cpu()

    starts = list(range(0, resamples, step))
    workers = 1 if device.type == "cuda" else max(1, threads)
    bar = tqdm(total=resamples, desc=f"null at {size} rows", disable=not progress, delay=1.0)
    # Worker threads of one torch thread each: the caller's torch setting is left alone, and
    # `threads` bounds what the calibration takes from a training job (docs/guard.md).
    with bar, ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as ex:
        for start, _ in zip(starts, ex.map(task, starts), strict=True):
            bar.update(min(step, resamples - start))
    return out


def _float32_agrees(
    fast_tables: _Tables, exact_tables: _Tables, idx: torch.Tensor, wanted: set[str]
) -> bool:
    """The float64 check: whether float32 gives the float64 values of the first resamples to
    :data:`FLOAT32_TOLERANCE` (relative to each column's largest value). It fails where a
    statistic is ill-conditioned in float32 (e.g. a spectrum spread over many decades)."""
    fast = _values(fast_tables, idx, wanted)
    exact = _values(exact_tables, idx, wanted)
    for name, value in exact.items():
        finite = torch.isfinite(value)
        if not torch.equal(finite, torch.isfinite(fast[name])):
            return False
        if bool(finite.any()):
            scale = float(value[finite].abs().max())
            error = float((fast[name][finite] - value[finite]).abs().max())
            if error > FLOAT32_TOLERANCE * max(scale, 1e-12):
                return False
    return True


@dataclass(frozen=True)
class _Tables:
    """The context's tensors on the computing device: rows in ``dtype`` for the products,
    per-row float64 scalars and the accepted support's sums for everything exact."""

    ctx: BatchContext
    dtype: torch.dtype
    image: torch.Tensor  # [s, d] float64 (sums)
    text: torch.Tensor
    image_c: torch.Tensor  # [s, d] in dtype (products)
    text_c: torch.Tensor
    sq: torch.Tensor  # [s] ‖x‖²
    text_sq: torch.Tensor
    cos: torch.Tensor  # [s] image–caption cosine
    sum_outer: torch.Tensor  # accepted support's Σxxᵀ in dtype
    total: torch.Tensor  # its Σx, float64
    trace: float  # its Σ‖x‖²
    count: int

    @classmethod
    def build(cls, ctx: BatchContext, device: torch.device, dtype: torch.dtype) -> _Tables:
        image, text = ctx.support.to(device), ctx.support_text.to(device)
        return cls(
            ctx=ctx,
            dtype=dtype,
            image=image,
            text=text,
            image_c=image.to(dtype),
            text_c=text.to(dtype),
            sq=(image * image).sum(dim=1),
            text_sq=(text * text).sum(dim=1),
            cos=(image * text).sum(dim=1),
            sum_outer=ctx.moments.sum_outer.to(device, dtype),
            total=ctx.moments.sum.to(device),
            trace=float(torch.trace(ctx.moments.sum_outer)),
            count=ctx.moments.count,
        )


def _values(tables: _Tables, idx: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The wanted columns for the resamples ``idx`` (``[B, m]`` support indices)."""
    ctx = tables.ctx
    b, m = idx.shape
    n = tables.count - m  # the comparison's rows: the accepted support without the resample
    select = torch.zeros(b, tables.image.shape[0], dtype=torch.float64, device=idx.device)
    select.scatter_(1, idx, 1.0)  # sums by one product, not a [B, m, d] float64 gather
    out: dict[str, torch.Tensor] = {}

    cos = tables.cos[idx]
    count, total, total_sq = ctx.alignment
    ref_mean = (total - cos.sum(dim=1)) / (count - m)
    ref_var = (total_sq - (cos * cos).sum(dim=1)) / (count - m) - ref_mean**2
    mean = cos.mean(dim=1)
    out["alignment_shift"] = mean - ref_mean
    var = (cos * cos).mean(dim=1) - mean**2
    out["alignment_variance"] = var.clamp_min(0.0) / ref_var.clamp_min(1e-300)

    batch_sum = select @ tables.image
    batch_sq = tables.sq[idx].sum(dim=1)
    batch_tv = _total_variance(batch_sq, batch_sum, m)
    ref_tv = _total_variance(tables.trace - batch_sq, tables.total - batch_sum, n)
    out["variance_ratio"] = batch_tv.clamp_min(0.0) / ref_tv.clamp_min(1e-300)

    if {"vendi_ratio", "frechet_distance", "cmmd"} & wanted:
        out.update(_products(tables, idx, batch_sum, batch_tv, ref_tv, wanted))
    if {"coverage", "density"} & wanted:
        out["coverage"], out["density"] = coverage(ctx, idx, select > 0, tables.image, tables.sq)
    out.update(_text_columns(tables, idx, select, wanted))
    return {name: value for name, value in out.items() if name in wanted}


def _products(
    tables: _Tables,
    idx: torch.Tensor,
    batch_sum: torch.Tensor,
    batch_tv: torch.Tensor,
    ref_tv: torch.Tensor,
    wanted: set[str],
) -> dict[str, torch.Tensor]:
    """The columns that need the resample's ``d × d`` or ``m × m`` products: Vendi, FD, CMMD."""
    ctx, dtype = tables.ctx, tables.dtype
    m = idx.shape[1]
    n = tables.count - m
    x = tables.image_c[idx]  # [B, m, d]
    thin = m <= x.shape[2]  # Σ_x (rank ≤ m − 1) is singular
    out: dict[str, torch.Tensor] = {}
    # [B, m, m]: CMMD's kernel, and Vendi's spectrum when m < d
    gram = x @ x.transpose(1, 2) if "cmmd" in wanted or thin else None
    outer = x.transpose(1, 2) @ x  # [B, d, d]
    ref_outer = tables.sum_outer - outer
    ref_sum = tables.total - batch_sum
    if "vendi_ratio" in wanted:
        spectrum = gram if gram is not None and thin else outer
        out["vendi_ratio"] = _vendi_ratio(spectrum, ref_outer, m, n)
    if "frechet_distance" in wanted:
        traces = batch_tv * m / (m - 1) + ref_tv * n / (n - 1)
        diff = batch_sum / m - ref_sum / n
        if thin:  # float32 would leave √(rounding) in Σ_x's null space
            rows = tables.image[idx]
            centred = rows - rows.mean(dim=1, keepdim=True)
            root = _trace_sqrt_thin(centred, _cov(ref_outer.double(), ref_sum, n))
        else:
            cov_y = _symmetric(_cov(ref_outer, ref_sum, n))
            root = _trace_sqrt_product(_cov(outer, batch_sum, m), cov_y)
        out["frechet_distance"] = ((diff * diff).sum(dim=1) + traces - 2.0 * root).clamp_min(0.0)
    if gram is not None and "cmmd" in wanted:  # last: CMMD overwrites the Gram
        out["cmmd"] = cmmd(ctx, idx, gram, tables.sq[idx].to(dtype))
    return out


def _total_variance(sum_sq: torch.Tensor, total: torch.Tensor, n: int) -> torch.Tensor:
    """``tr Σ`` (population) from ``Σ‖x‖²`` and ``Σx``."""
    mean = total / n
    return sum_sq / n - (mean * mean).sum(dim=-1)


def _eigvalsh(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(_symmetric(a))


def _exp_entropy(eigenvalues: torch.Tensor) -> torch.Tensor:
    """``[B]`` exp of the Shannon entropy of each normalised spectrum (0 for a zero one)."""
    lam = eigenvalues.double().clamp_min(0.0)
    total = lam.sum(dim=1, keepdim=True)
    p = lam / torch.where(total > 0, total, 1.0)
    entropy = -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).sum(dim=1)
    return torch.where(total[:, 0] > 0, torch.exp(entropy), 0.0)


def _cov(outer: torch.Tensor, total: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, d, d]`` covariances (``ddof=1``) in ``outer``'s dtype."""
    mean_outer = total[:, :, None] * total[:, None, :] / n
    return (outer - mean_outer.to(outer.dtype)) / (n - 1)


def _trace_sqrt_thin(centred: torch.Tensor, cov_y: torch.Tensor) -> torch.Tensor:
    """``[B]`` ``tr((Σ_y^½ Σ_x Σ_y^½)^½)`` for ``m ≤ d`` from the ``m × m`` matrix
    ``X_c R Rᵀ X_cᵀ/(m−1)`` (``Σ_y = R Rᵀ``, ``X_c`` the centred rows), in float64: its
    eigenvalues are the non-zero ones of ``Σ_y^½ Σ_x Σ_y^½``."""
    a = centred @ _psd_factor(_symmetric(cov_y))
    inner = a @ a.transpose(1, 2) / (centred.shape[1] - 1)
    return _eigvalsh(inner).clamp_min(0.0).sqrt().sum(dim=1)


def _symmetric(a: torch.Tensor) -> torch.Tensor:
    return (a + a.transpose(-1, -2)) / 2


def _vendi_ratio(spectrum: torch.Tensor, ref_outer: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """``[B]`` Vendi score of each resample (its ``m × m`` Gram or ``d × d`` outer product) over
    its comparison's (``ref_outer``, ``Σxxᵀ`` of ``n`` rows)."""
    return _exp_entropy(_eigvalsh(spectrum / m)) / _exp_entropy(_eigvalsh(ref_outer / n))


def _text_columns(
    tables: _Tables, idx: torch.Tensor, select: torch.Tensor, wanted: set[str]
) -> dict[str, torch.Tensor]:
    """The caption-side columns (NaN where the reference records no captions or lengths)."""
    ctx = tables.ctx
    b, m = idx.shape
    nan = torch.full((b,), math.nan, dtype=torch.float64, device=idx.device)
    out = {"text_variance_ratio": nan, "text_vendi_ratio": nan, "caption_length_shift": nan}
    moments = ctx.text_moments
    if moments is not None:
        n = moments.count - m
        t_sum = select @ tables.text
        t_sq = tables.text_sq[idx].sum(dim=1)
        ref_sq = float(torch.trace(moments.sum_outer)) - t_sq
        ref_sum = moments.sum.to(idx.device) - t_sum
        out["text_variance_ratio"] = _total_variance(t_sq, t_sum, m).clamp_min(0.0) / (
            _total_variance(ref_sq, ref_sum, n).clamp_min(1e-300)
        )
        if "text_vendi_ratio" in wanted:
            t = tables.text_c[idx]
            outer = t.transpose(1, 2) @ t
            spectrum = t @ t.transpose(1, 2) if m < t.shape[2] else outer
            ref_outer = moments.sum_outer.to(idx.device, tables.dtype) - outer
            out["text_vendi_ratio"] = _vendi_ratio(spectrum, ref_outer, m, n)
    if ctx.support_tokens is not None:
        tokens = ctx.support_tokens.to(idx.device).double()
        kept = ctx.accepted.to(idx.device)
        total, count = float(tokens[kept].sum()), int(kept.sum())
        batch = tokens[idx].sum(dim=1)
        out["caption_length_shift"] = batch / m - (total - batch) / (count - m)
    if "caption_duplicate_rate" in wanted:
        out["caption_duplicate_rate"] = caption_duplicates(ctx, idx)
    return out
