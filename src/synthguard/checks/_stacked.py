"""The stacked null's table-based statistics: coverage and density from the precomputed
in-ball pairs, CMMD from the precomputed kernel sums, caption duplicates from the support's
duplicate pairs (:mod:`synthguard.checks._resample` stacks them)."""

from __future__ import annotations

import math

import torch

from synthguard.checks._null import BatchContext, kept_radii_sq
from synthguard.functional.collapse import _TIE_RTOL
from synthguard.functional.mmd import CMMD_SCALE

__all__ = ["caption_duplicates", "cmmd", "coverage"]


def _kept_radii(ctx: BatchContext, keep: torch.Tensor) -> torch.Tensor:
    """``[B, c]`` squared k-NN radii of each resample's kept coverage rows among its kept rows
    (:func:`~synthguard.checks._null.kept_radii_sq`, stacked); ``nan`` where not kept."""
    index, dist = (t.to(keep.device) for t in ctx.coverage_neighbours)
    b, c = keep.shape
    out = torch.full((b, c), math.nan, dtype=torch.float64, device=keep.device)
    if index.shape[1]:
        kept_near = torch.gather(keep, 1, index.reshape(1, -1).expand(b, -1)).view(b, c, -1)
        kth = kept_near & (kept_near.cumsum(dim=2) == ctx.k)
        found = kth.any(dim=2) & keep
        at = kth.int().argmax(dim=2, keepdim=True)
        radii = dist.expand(b, -1, -1).gather(2, at)[:, :, 0]
        out = torch.where(found, radii, out)
    else:
        found = torch.zeros_like(keep)
    for r in torch.nonzero(keep & ~found).tolist():  # lists ran out of kept rows: rare
        one = kept_radii_sq(ctx, keep[r[0]].cpu())
        out[r[0]] = torch.full_like(out[r[0]], math.nan)
        out[r[0], keep[r[0]]] = one.to(out.device)
    return out


def coverage(
    ctx: BatchContext,
    idx: torch.Tensor,
    in_batch: torch.Tensor,
    image: torch.Tensor,
    sq: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B]`` coverage and density of each resample against its kept coverage balls
    (``image``: the support's rows, ``sq``: their squared norms)."""
    _, dist = ctx.coverage_neighbours
    c = ctx.coverage_rows
    widest = (dist[:, -1] if dist.shape[1] else torch.zeros(c)).to(idx.device)
    cover, norms = image[:c], sq[:c]
    keep = ctx.accepted[:c].to(idx.device) & ~in_batch[:, :c]
    radii = _kept_radii(ctx, keep)
    tie = _TIE_RTOL * 2.0 * torch.where(keep, norms, -math.inf).max(dim=1).values
    listed = keep & (radii <= widest)  # every pair inside such a ball is in coverage_members
    limit = torch.where(listed, radii - tie[:, None], -math.inf)
    owner, ball, d2 = _resample_pairs(ctx, idx)
    hits = d2 < limit[owner, ball]
    counts = torch.zeros(keep.shape, dtype=torch.float64, device=idx.device)
    counts.view(-1).scatter_add_(0, owner * c + ball, hits.double())
    for r, j in torch.nonzero(keep & ~listed).tolist():  # balls wider than their list: rare
        near = ((image[idx[r]] - cover[j]) ** 2).sum(dim=1) < radii[r, j] - tie[r]
        counts[r, j] = near.sum()
    kept = keep.sum(dim=1)
    coverage = ((counts > 0) & keep).sum(dim=1).double() / kept
    density = counts.sum(dim=1) / idx.shape[1] / ctx.k
    nan = torch.full_like(coverage, math.nan, dtype=torch.float64)
    return torch.where(kept > 0, coverage, nan), torch.where(kept > 0, density, nan)


def _resample_pairs(
    ctx: BatchContext, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(resample, ball, d²)`` of the listed pairs whose member row is in a resample: each
    resample row's slice of the member-sorted :attr:`BatchContext.coverage_members` (about
    ``m / s`` of all pairs per resample, instead of a pass over all of them)."""
    ball, _, d2 = ctx.coverage_members
    ball, d2 = ball.to(idx.device), d2.to(idx.device)
    offsets = ctx.coverage_member_offsets.to(idx.device)
    rows = idx.reshape(-1)
    start, length = offsets[rows], offsets[rows + 1] - offsets[rows]
    b, m = idx.shape
    owner = torch.arange(b, device=idx.device).repeat_interleave(m).repeat_interleave(length)
    # pair t of group g sits at start[g] + (t − the group's first t)
    at = torch.repeat_interleave(start - (length.cumsum(0) - length), length)
    at += torch.arange(at.numel(), device=idx.device)
    return owner, ball[at], d2[at]


def cmmd(
    ctx: BatchContext, idx: torch.Tensor, gram: torch.Tensor, sq: torch.Tensor
) -> torch.Tensor:
    """``[B]`` CMMD of each resample against the accepted CMMD rows it leaves; ``gram``
    (``[B, m, m]``, the resample's inner products) is overwritten.

    The kernel is formed as ``k − 1`` (``expm1``): CMMD is a small difference of means close
    to 1, which float32 keeps only this way.
    """
    to_accepted, within, total, count = ctx.cmmd_sums
    to_accepted, within = to_accepted.to(idx.device), within.to(idx.device)
    kernel_c = ctx.cmmd_kernel.to(idx.device)
    gamma = 1.0 / (2.0 * ctx.cmmd_sigma**2)
    b, m = idx.shape
    exponent = gram.mul_(2.0 * gamma).sub_((sq * gamma)[:, :, None]).sub_((sq * gamma)[:, None, :])
    # |exponent| <= γ(‖x‖ + ‖y‖)² <= 4γ·max‖x‖² (Cauchy–Schwarz), known without a pass over it
    small = 4.0 * gamma * float(sq.max()) <= 1.0 / 32.0
    minus_one = _expm1(exponent.clamp_max_(0.0), small)
    minus_one.diagonal(dim1=1, dim2=2).zero_()  # k(x, x) = 1 exactly, as the definition
    # Row sums in the kernel's dtype, then float64: every entry is <= 0 (no cancellation), and
    # this avoids a float64 copy of the [B, m, m] kernel (a third of CMMD's time in float32).
    self_term = minus_one.sum(dim=2).sum(dim=1, dtype=torch.float64) / m**2
    out = torch.empty(b, dtype=torch.float64, device=idx.device)
    for r in range(b):
        inside = idx[r] < ctx.cmmd_rows  # resample rows that leave the CMMD set
        q = idx[r][inside]
        n_kept = count - int(inside.sum())
        if n_kept == 0:
            out[r] = math.nan
            continue
        dropped = minus_one[r][:, inside].sum(dtype=torch.float64) + m * q.numel()
        cross = (to_accepted[idx[r]].sum() - dropped) / (m * n_kept) - 1.0
        kept = total - 2.0 * within[q].sum() + kernel_c[q][:, q].sum()
        out[r] = CMMD_SCALE * (self_term[r] + (kept / n_kept**2 - 1.0) - 2.0 * cross)
    return out


def _expm1(z: torch.Tensor, small: bool) -> torch.Tensor:
    """``exp(z) − 1``; when ``small`` (``|z| ≤ 1/32``; unit rows at σ = 10 give ``|z| ≤ 0.02``)
    by its Taylor polynomial, in place and several times faster than ``torch.expm1`` on CPU: to
    ``z⁶`` in float64 (remainder below 2e-13 relative to ``z``), to ``z⁴`` in float32 (below
    1e-8 relative, under float32's rounding of 6e-8)."""
    if not small:
        return torch.expm1(z)
    degree = 4 if z.dtype == torch.float32 else 6
    coefficients = [1.0 / math.factorial(k) for k in range(degree, 0, -1)]
    poly = torch.mul(z, coefficients[0]).add_(coefficients[1])
    for coefficient in coefficients[2:]:
        poly.mul_(z).add_(coefficient)
    return poly.mul_(z)


def caption_duplicates(ctx: BatchContext, idx: torch.Tensor) -> torch.Tensor:
    """Share of each resample's captions that duplicate an earlier one in the resample."""
    pairs = ctx.caption_pairs.to(idx.device)
    out = torch.zeros(idx.shape[0], dtype=torch.float64)
    if pairs.numel() == 0:
        return out
    position = torch.full((ctx.support.shape[0],), -1, dtype=torch.int64, device=idx.device)
    for b in range(idx.shape[0]):
        position.fill_(-1)
        position[idx[b]] = torch.arange(idx.shape[1], device=idx.device)
        first, second = position[pairs[:, 0]], position[pairs[:, 1]]
        both = (first >= 0) & (second >= 0)
        later = torch.maximum(first[both], second[both])
        out[b] = torch.unique(later).numel() / idx.shape[1]
    return out
