"""The batch tests' values and their resampled null distributions.

Distribution tests compare the batch's accepted pairs with the reference pairs that pass the
same per-sample checks (so both sides are truncated alike). Their null comes from
real-vs-real resamples of those accepted support pairs at the batch's size; a resample is
compared with them *without* its own rows (sums subtracted exactly; k-NN balls and the CMMD
rows exclude them), so the null has the spread of a two-sample comparison of sizes ``m`` and
``n − m``. The duplicate rate's null resamples the whole support. Columns follow
:data:`~synthguard.checks.RESAMPLED_TESTS` (docs/design.md, "Decision rules").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from synthguard.checks._batch import BATCH_TESTS, RESAMPLED_TESTS, TestInputs
from synthguard.functional import CollapseReference, collapse_metrics
from synthguard.stats import Moments

__all__ = ["BatchContext", "batch_null", "batch_values", "comparison"]


@dataclass(frozen=True)
class BatchContext:
    """What the batch tests compare with (float64 unit rows on the CPU).

    Attributes:
        moments: image moments of the accepted support rows.
        alignment: ``(pairs, Σ cos, Σ cos²)`` of the accepted support pairs.
        accepted: ``[s]`` bool, support rows the per-sample checks pass (leave-one-out).
        support: ``[s, d]`` image rows; the coverage and CMMD sets are prefixes of it.
        coverage_rows, coverage_radii_sq: the coverage set's size and k-NN radii² within it.
        cmmd_rows, cmmd_sigma, cmmd_kernel: the CMMD set's size, bandwidth and kernel matrix.
        duplicate_cosine: the calibrated near-duplicate cosine (``inf``: check off).
    """

    moments: Moments
    alignment: tuple[int, float, float]
    accepted: torch.Tensor
    support: torch.Tensor
    coverage_rows: int
    coverage_radii_sq: torch.Tensor
    cmmd_rows: int
    cmmd_sigma: float
    cmmd_kernel: torch.Tensor
    duplicate_cosine: float

    @cached_property
    def cmmd_row_sums(self) -> torch.Tensor:
        """``[cmmd_rows]`` row sums of the kernel matrix (every resample reads them)."""
        return self.cmmd_kernel.sum(dim=1)

    @cached_property
    def cmmd_total(self) -> torch.Tensor:
        """The sum of the whole kernel matrix."""
        return self.cmmd_row_sums.sum()


def comparison(
    ctx: BatchContext, exclude: torch.Tensor | None = None, cosines: torch.Tensor | None = None
) -> CollapseReference:
    """The accepted reference pairs as a :class:`CollapseReference`, without the support rows
    ``exclude`` (a resample's own rows, whose image–caption cosines are ``cosines``)."""
    moments, (count, total, total_sq) = ctx.moments, ctx.alignment
    if exclude is not None and cosines is not None:
        rows = ctx.support[exclude]
        moments = Moments(
            moments.count - rows.shape[0],
            moments.sum - rows.sum(0),
            moments.sum_outer - rows.T @ rows,
        )
        count -= int(cosines.numel())
        total -= float(cosines.sum())
        total_sq -= float((cosines * cosines).sum())
    cover = _kept(ctx, ctx.coverage_rows, exclude)
    cmmd = _kept(ctx, ctx.cmmd_rows, exclude)
    # Σ kernel over kept pairs = Σ all − 2 Σ rows of dropped + Σ dropped×dropped: the
    # reference's self-term costs O(dropped²) per resample instead of O(c²).
    dropped = torch.nonzero(~cmmd).flatten()
    kept_sum = ctx.cmmd_total - 2.0 * ctx.cmmd_row_sums[dropped].sum()
    kept_sum = kept_sum + ctx.cmmd_kernel[dropped][:, dropped].sum()
    n_kept = int(cmmd.sum())
    return CollapseReference(
        moments=moments,
        alignment=(count, total, total_sq),
        coverage_rows=ctx.support[: ctx.coverage_rows][cover],
        coverage_radii_sq=ctx.coverage_radii_sq[cover],
        cmmd_rows=ctx.support[: ctx.cmmd_rows][cmmd],
        cmmd_self=float(kept_sum) / (n_kept**2) if n_kept else math.nan,
        cmmd_sigma=ctx.cmmd_sigma,
    )


def batch_values(
    ctx: BatchContext,
    image: torch.Tensor,
    text: torch.Tensor,
    exclude: torch.Tensor | None = None,
) -> dict[str, float]:
    """:func:`~synthguard.functional.collapse_metrics` of unit pairs against the accepted
    reference pairs; ``exclude`` (support indices of the rows, in resamples) removes them."""
    cosines = (image * text).sum(dim=1) if exclude is not None else None
    return collapse_metrics(image, text, comparison(ctx, exclude, cosines))


def _kept(ctx: BatchContext, rows: int, exclude: torch.Tensor | None) -> torch.Tensor:
    keep = ctx.accepted[:rows].clone()
    if exclude is not None:
        keep[exclude[exclude < rows]] = False
    return keep


def batch_null(
    ctx: BatchContext,
    support_text: torch.Tensor,
    accepted: torch.Tensor,
    size: int,
    duplicate_size: int,
    resamples: int,
    seed: int,
) -> torch.Tensor:
    """``[R, K]`` resampled null of every resampled test (columns: RESAMPLED_TESTS).

    Distribution tests: ``size`` rows drawn from the ``accepted`` support indices; ``size=0``
    skips them (NaN columns). Duplicate rate: ``duplicate_size`` rows of the whole support.
    """
    generator = torch.Generator().manual_seed(seed)
    s = ctx.support.shape[0]
    out = torch.empty(resamples, len(RESAMPLED_TESTS), dtype=torch.float64)
    for i in range(resamples):
        metrics: dict[str, float] = {}
        if size:
            idx = accepted[torch.randperm(accepted.numel(), generator=generator)[:size]]
            metrics = batch_values(ctx, ctx.support[idx], support_text[idx], exclude=idx)
        dup_idx = torch.randperm(s, generator=generator)[:duplicate_size]
        inputs = TestInputs(
            metrics=metrics,
            duplicate_image=ctx.support[dup_idx],
            duplicate_cosine=ctx.duplicate_cosine,
        )
        out[i] = torch.tensor(
            [
                BATCH_TESTS[name].value(inputs) if metrics or BATCH_TESTS[name].rows != "accepted"
                else math.nan
                for name in RESAMPLED_TESTS
            ],
            dtype=torch.float64,
        )  # fmt: skip
    return out
