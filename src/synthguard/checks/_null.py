"""The batch tests' values and their resampled null distributions: a split design.

Distribution tests compare the batch's accepted pairs with the reference pairs that pass the
same per-sample checks (so both sides are truncated alike). Their null comes from
real-vs-real resamples of those accepted support pairs at the batch's size ``m``: a resample
is compared with the accepted support *without* its own rows (sums subtracted exactly; the
k-NN radii of the coverage balls recomputed among the kept rows; CMMD rows excluded), a
comparison of ``m`` rows with ``n − m``. So that a fresh batch meets exactly that comparison,
the batch is compared with the accepted support without ``m`` seeded held-out rows
(a guard draws them with its tested rows, :func:`~synthguard.checks.split_batch`; :func:`held_out`
is the plain uniform draw), not with all of it: every statistic whose centre depends on the
reference's size (coverage, whose k-NN balls shrink as the reference grows, or a Vendi score)
is then exchangeable with its null at every batch/reference ratio (docs/design.md, "Decision
rules"). Columns follow :data:`~synthguard.checks.RESAMPLED_TESTS`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import torch

from synthguard.checks._batch import (
    BATCH_TESTS,
    CAPTION_DUPLICATE_COSINE,
    RESAMPLED_TESTS,
    TestInputs,
)
from synthguard.checks._geometry import max_cosine
from synthguard.functional import CollapseReference, collapse_metrics
from synthguard.functional._common import DEFAULT_BLOCK_SIZE, sq_dists
from synthguard.functional.mmd import rbf_kernel
from synthguard.stats import Moments

__all__ = [
    "BatchContext",
    "batch_inputs",
    "batch_null_exact",
    "batch_values",
    "comparison",
    "draws",
    "held_out",
]

#: Neighbours kept per coverage row beyond ``k``: a kept row's k-th kept neighbour is found in
#: its list unless more than ``_SPARE`` of its nearest rows are held out (then it is recomputed
#: from the whole row), so the radii are exact either way.
_SPARE = 48
#: Offset of the held-out rows' seed from the resamples' seed (independent draws).
_HELD_OUT_SEED = 0x5EED


@dataclass(frozen=True)
class BatchContext:
    """What the batch tests compare with (float64 unit rows on the CPU).

    Attributes:
        moments: image moments of the accepted support rows.
        alignment: ``(pairs, Σ cos, Σ cos²)`` of the accepted support pairs.
        accepted: ``[s]`` bool, support rows the per-sample checks pass (leave-one-out).
        support, support_text: ``[s, d]`` image and caption rows; the coverage and CMMD sets
            are prefixes of ``support``.
        k: neighbourhood size of the coverage balls.
        coverage_rows, coverage_radii_sq: the coverage set's size and k-NN radii² within it.
        cmmd_rows, cmmd_sigma, cmmd_kernel: the CMMD set's size, bandwidth and kernel matrix.
        duplicate_cosine: the calibrated near-duplicate cosine (``inf``: check off).
        text_moments: caption moments of the accepted support rows.
        support_tokens: ``[s]`` caption tokens per support pair (``None``: not recorded).
    """

    moments: Moments
    alignment: tuple[int, float, float]
    accepted: torch.Tensor
    support: torch.Tensor
    support_text: torch.Tensor
    k: int
    coverage_rows: int
    coverage_radii_sq: torch.Tensor
    cmmd_rows: int
    cmmd_sigma: float
    cmmd_kernel: torch.Tensor
    duplicate_cosine: float
    text_moments: Moments | None = None
    support_tokens: torch.Tensor | None = None

    @cached_property
    def pool(self) -> torch.Tensor:
        """Indices of the accepted support rows (what resamples and held-out rows come from)."""
        return torch.nonzero(self.accepted).flatten()

    @cached_property
    def cmmd_row_sums(self) -> torch.Tensor:
        """``[cmmd_rows]`` row sums of the kernel matrix (every resample reads them)."""
        return self.cmmd_kernel.sum(dim=1)

    @cached_property
    def cmmd_total(self) -> torch.Tensor:
        """The sum of the whole kernel matrix."""
        return self.cmmd_row_sums.sum()

    @cached_property
    def coverage_neighbours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([c, L] indices, [c, L] squared distances)`` of each coverage row's nearest other
        coverage rows, nearest first (``L = min(c − 1, k + 48)``)."""
        rows = self.support[: self.coverage_rows]
        c = rows.shape[0]
        width = min(c - 1, self.k + _SPARE)
        sq = (rows * rows).sum(dim=1)
        index = torch.empty(c, width, dtype=torch.int64)
        dist = torch.empty(c, width, dtype=torch.float64)
        for start in range(0, c, DEFAULT_BLOCK_SIZE):
            stop = min(start + DEFAULT_BLOCK_SIZE, c)
            d2 = sq_dists(rows[start:stop], rows, sq[start:stop], sq)
            d2[torch.arange(stop - start), torch.arange(start, stop)] = math.inf  # not itself
            near = torch.topk(d2, width, dim=1, largest=False, sorted=True)
            index[start:stop], dist[start:stop] = near.indices, near.values
        return index, dist

    @cached_property
    def coverage_members(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ball, member, d²)``: every (coverage row, accepted support row) pair within the
        coverage row's widest listed neighbour (``coverage_neighbours``), itself excluded.

        A resample's kept radius of a listed ball is at most that distance, so these pairs
        are all a resampled coverage needs (:mod:`synthguard.checks._resample`); memory about
        ``(k + 48) · s`` pairs, never ``c × s``. Sorted by member row, so a resample reads only
        its own rows' pairs (:attr:`coverage_member_offsets`).
        """
        _, dist = self.coverage_neighbours
        widest = dist[:, -1] if dist.shape[1] else torch.zeros(self.coverage_rows)
        rows, pool = self.support[: self.coverage_rows], self.support[self.pool]
        r_sq, p_sq = (rows * rows).sum(dim=1), (pool * pool).sum(dim=1)
        balls, members, dists = [], [], []
        for start in range(0, rows.shape[0], DEFAULT_BLOCK_SIZE):
            stop = min(start + DEFAULT_BLOCK_SIZE, rows.shape[0])
            d2 = sq_dists(rows[start:stop], pool, r_sq[start:stop], p_sq)
            near = (d2 <= widest[start:stop, None]) & (
                self.pool[None, :] != torch.arange(start, stop)[:, None]
            )
            ball, member = torch.nonzero(near, as_tuple=True)
            balls.append(ball + start)
            members.append(self.pool[member])
            dists.append(d2[ball, member])
        member = torch.cat(members)
        order = torch.argsort(member, stable=True)
        return torch.cat(balls)[order], member[order], torch.cat(dists)[order]

    @cached_property
    def coverage_member_offsets(self) -> torch.Tensor:
        """``[s + 1]``: support row ``j``'s pairs in :attr:`coverage_members` are the slice
        ``offsets[j] : offsets[j + 1]``."""
        _, member, _ = self.coverage_members
        counts = torch.bincount(member, minlength=self.support.shape[0])
        return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])

    @cached_property
    def cmmd_sums(self) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """``(to_accepted, within, total, count)`` of the kernel over the accepted CMMD rows:
        each support row's kernel sum to them (``[s]``), each CMMD row's sum within them
        (``[cmmd_rows]``), the sum of all their pairs and their number."""
        accepted = self.accepted[: self.cmmd_rows]
        ref = self.support[: self.cmmd_rows][accepted]
        within = self.cmmd_kernel[:, accepted].sum(dim=1)
        to_accepted = torch.empty(self.support.shape[0], dtype=torch.float64)
        for start in range(0, self.support.shape[0], DEFAULT_BLOCK_SIZE):
            block = self.support[start : start + DEFAULT_BLOCK_SIZE]
            to_accepted[start : start + block.shape[0]] = rbf_kernel(
                block, ref, self.cmmd_sigma
            ).sum(dim=1)
        total = float(within[accepted].sum())
        return to_accepted, within, total, int(accepted.sum())

    @cached_property
    def caption_pairs(self) -> torch.Tensor:
        """``[P, 2]`` accepted support pairs whose captions are duplicates (text cosine above
        ``CAPTION_DUPLICATE_COSINE``), each pair once."""
        text = self.support_text[self.pool]
        found = []
        for start in range(0, text.shape[0], DEFAULT_BLOCK_SIZE):
            sims = text[start : start + DEFAULT_BLOCK_SIZE] @ text.T
            a, b = torch.nonzero(sims > CAPTION_DUPLICATE_COSINE, as_tuple=True)
            a = a + start
            found.append(torch.stack([self.pool[a[a > b]], self.pool[b[a > b]]], dim=1))
        return torch.cat(found) if found else torch.empty(0, 2, dtype=torch.int64)

    @cached_property
    def support_duplicates(self) -> int:
        """Support rows whose cosine to an earlier support row is above ``duplicate_cosine``."""
        if math.isinf(self.duplicate_cosine):
            return 0
        return int((max_cosine(self.support, exclude="later") > self.duplicate_cosine).sum())


def held_out(
    ctx: BatchContext, size: int, seed: int, batch: torch.Tensor | None = None
) -> torch.Tensor:
    """``size`` accepted support rows for a batch's comparison to leave out, drawn uniformly.

    A guard draws its held-out rows together with the rows it tests
    (:func:`~synthguard.checks.split_batch`, which also re-judges the copy checks); this is the
    plain draw for rows chosen some other way.

    A resample of the null is compared with the accepted support without its own ``size``
    rows; the batch is compared with it without these, so both comparisons are of ``size``
    rows with ``n − size`` (module docstring). The draw is seeded by ``seed`` and the batch's
    own rows, so a batch always meets the same rows (equal seeds give equal reports) while
    successive batches meet different ones: no single draw decides every batch's verdict.
    """
    digest = 0
    if batch is not None:
        blob = batch.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
        digest = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")
    generator = torch.Generator().manual_seed((seed + _HELD_OUT_SEED + digest) % 2**63)
    return ctx.pool[torch.randperm(ctx.pool.numel(), generator=generator)[:size]]


def kept_radii_sq(ctx: BatchContext, keep: torch.Tensor) -> torch.Tensor:
    """Squared k-NN radii of the kept coverage rows *among the kept rows* (``keep``: ``[c]``).

    A row with fewer than ``k`` kept others gets ``inf`` (its ball holds everything).
    """
    index, dist = ctx.coverage_neighbours
    rows = torch.nonzero(keep).flatten()
    kept_near = keep[index[rows]]
    rank = kept_near.cumsum(dim=1)
    kth = kept_near & (rank == ctx.k)
    found = kth.any(dim=1)
    out = torch.full((rows.numel(),), math.inf, dtype=torch.float64)
    out[found] = dist[rows[found]].gather(1, kth[found].int().argmax(dim=1, keepdim=True))[:, 0]
    # Rows whose list ran out of kept neighbours: from the whole row (rare; exact).
    cover = ctx.support[: ctx.coverage_rows]
    others = cover[keep]
    for j in torch.nonzero(~found).flatten().tolist():
        i = int(rows[j])
        d2 = ((others - cover[i]) ** 2).sum(dim=1)
        d2 = d2[rows != i]  # ``others`` are the rows ``rows`` index
        if d2.numel() >= ctx.k:
            out[j] = torch.kthvalue(d2, ctx.k).values
    return out


def comparison(ctx: BatchContext, exclude: torch.Tensor | None = None) -> CollapseReference:
    """The accepted reference pairs as a :class:`CollapseReference`, without the support rows
    ``exclude`` (their coverage balls' radii recomputed among the rows kept)."""
    moments, (count, total, total_sq) = ctx.moments, ctx.alignment
    text_moments = ctx.text_moments
    if exclude is not None:
        rows, captions = ctx.support[exclude], ctx.support_text[exclude]
        cosines = (rows * captions).sum(dim=1)
        moments = _without(moments, rows)
        text_moments = None if text_moments is None else _without(text_moments, captions)
        count -= int(cosines.numel())
        total -= float(cosines.sum())
        total_sq -= float((cosines * cosines).sum())
    cover = _kept(ctx, ctx.coverage_rows, exclude)
    cmmd = _kept(ctx, ctx.cmmd_rows, exclude)
    radii_sq = ctx.coverage_radii_sq[cover] if exclude is None else kept_radii_sq(ctx, cover)
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
        coverage_radii_sq=radii_sq,
        cmmd_rows=ctx.support[: ctx.cmmd_rows][cmmd],
        cmmd_self=float(kept_sum) / (n_kept**2) if n_kept else math.nan,
        cmmd_sigma=ctx.cmmd_sigma,
        text_moments=text_moments,
        k=ctx.k,
    )


def _without(moments: Moments, rows: torch.Tensor) -> Moments:
    """Moments with ``rows`` taken out (exact: sums subtract)."""
    return Moments(
        moments.count - rows.shape[0], moments.sum - rows.sum(0), moments.sum_outer - rows.T @ rows
    )


def batch_inputs(
    ctx: BatchContext,
    image: torch.Tensor,
    text: torch.Tensor,
    tokens: torch.Tensor | None,
    exclude: torch.Tensor | None,
) -> TestInputs:
    """The resampled tests' inputs of unit pairs (and their caption tokens) against the
    accepted reference pairs without the support rows ``exclude``."""
    reference_tokens = math.nan
    if ctx.support_tokens is not None:
        keep = _kept(ctx, ctx.support_tokens.numel(), exclude)
        reference_tokens = float(ctx.support_tokens[keep].mean())
    return TestInputs(
        metrics=batch_values(ctx, image, text, exclude),
        text=text,
        caption_tokens=tokens,
        reference_tokens=reference_tokens,
    )


def batch_values(
    ctx: BatchContext,
    image: torch.Tensor,
    text: torch.Tensor,
    exclude: torch.Tensor | None = None,
) -> dict[str, float]:
    """:func:`~synthguard.functional.collapse_metrics` of unit pairs against the accepted
    reference pairs without the support rows ``exclude`` (a checked batch: its held-out rows;
    a resample: its own rows; ``None``: all of them)."""
    return collapse_metrics(image, text, comparison(ctx, exclude))


def _kept(ctx: BatchContext, rows: int, exclude: torch.Tensor | None) -> torch.Tensor:
    keep = ctx.accepted[:rows].clone()
    if exclude is not None:
        keep[exclude[exclude < rows]] = False
    return keep


def draws(ctx: BatchContext, size: int, resamples: int, seed: int) -> torch.Tensor:
    """``[R, size]`` support indices of the null's resamples (the same draws on every path)."""
    generator = torch.Generator().manual_seed(seed)
    pool = ctx.pool
    out = torch.empty(resamples, size, dtype=torch.int64)
    for i in range(resamples):
        out[i] = pool[torch.randperm(pool.numel(), generator=generator)[:size]]
    return out


def batch_null_exact(ctx: BatchContext, size: int, resamples: int, seed: int) -> torch.Tensor:
    """``[R, K]`` resampled null of the distribution tests (columns: RESAMPLED_TESTS):
    ``size`` rows drawn from the accepted support, against the accepted support without them.

    The reference path: each resample through :func:`batch_values`, the public definition,
    in float64. :func:`~synthguard.checks.batch_null` computes the same values from the same
    :func:`draws`, stacked (5.6× faster on 2 CPU cores, docs/benchmarks.md); tests and
    benchmarks compare the two.
    """
    out = torch.empty(resamples, len(RESAMPLED_TESTS), dtype=torch.float64)
    for i, idx in enumerate(draws(ctx, size, resamples, seed)):
        tokens = None if ctx.support_tokens is None else ctx.support_tokens[idx]
        inputs = batch_inputs(ctx, ctx.support[idx], ctx.support_text[idx], tokens, idx)
        out[i] = torch.tensor(
            [BATCH_TESTS[name].value(inputs) for name in RESAMPLED_TESTS], dtype=torch.float64
        )
    return out
