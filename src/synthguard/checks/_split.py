"""Which batch rows the distribution tests use, and which support rows their comparison leaves out.

A resample of the null (:mod:`synthguard.checks._null`) is ``m`` accepted support rows, and a
support row was accepted by the copy checks (``reference_copy``, ``near_duplicate``) when its
largest cosine to the ``n₀ − 1`` *other support rows* stayed below the threshold. A batch
row's own per-sample decision is stricter: it is judged against all ``n₀`` support rows and
every earlier batch row, about ``n₀ + m/2`` rows. Rows in dense regions were then removed from
batches more often than from resamples, and at ``m/n₀ = 0.5`` the variance-ratio tests of real
batches failed at 1.3–1.5× their level (docs/design.md, "Decision rules").

So the rows the distribution tests use are re-judged in a *world* that a resample's rows
meet: the support without a seeded held-out set ``H``, plus the batch's candidate rows. ``H``
is the prefix of a seeded permutation of every support row, cut at its ``m``-th accepted row:
a uniform draw from the whole support (rejected rows included, as in ``S``), whose accepted
part is the ``m`` rows the comparison leaves out. Candidates are the batch's embeddable rows in
a seeded order, as many as ``H`` has rows, so the world has ``n₀`` rows like the support; a
candidate is tested when the non-copy checks accepted it and its largest cosine to the world's
other rows is at most the copy threshold. Real batches are then tested as real resamples are,
whatever ``m/n₀``. When fewer than ``m`` candidates pass, the next candidates join the world
(a few rows more than ``n₀``), and when the candidates run out, the next smaller grid size is
tried.

The tested rows need not be a subset of the batch's accepted samples: a row its per-sample
decision rejected as a copy of an earlier batch row, or of a support row in ``H``, can pass in
the world. The per-sample decisions (what a user trains on) are not changed by any of this.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from synthguard.checks._geometry import max_cosine
from synthguard.checks._null import _HELD_OUT_SEED, BatchContext

__all__ = ["BatchSplit", "candidates_needed", "split_batch", "world_held_out"]


@dataclass(frozen=True)
class BatchSplit:
    """The distribution tests' rows of a batch and their comparison.

    Attributes:
        tested: ``[m]`` positions, into the candidates, of the rows the tests use (increasing).
        held_out: ``[m]`` accepted support rows the comparison leaves out.
        world_out: every support row the world left out (``held_out`` and rejected rows).
        world_candidates: candidates that were in the world.
    """

    tested: torch.Tensor
    held_out: torch.Tensor
    world_out: torch.Tensor
    world_candidates: int

    @property
    def size(self) -> int:
        """Rows tested (0: too few candidates passed)."""
        return int(self.tested.numel())


def world_held_out(ctx: BatchContext, size: int, seed: int, digest: int = 0) -> torch.Tensor:
    """The support rows a batch's world leaves out for ``size`` tested rows: a seeded
    permutation of all support rows, cut after its ``size``-th accepted row.

    Example:
        >>> import torch
        >>> from synthguard.checks import BatchContext
        >>> ctx = BatchContext.__new__(BatchContext)
        >>> object.__setattr__(ctx, "accepted", torch.tensor([True, False, True, True]))
        >>> object.__setattr__(ctx, "support", torch.eye(4, dtype=torch.float64))
        >>> out = world_held_out(ctx, 2, seed=0)
        >>> int(ctx.accepted[out].sum()), bool(ctx.accepted[out[-1]])
        (2, True)
    """
    accepted = ctx.accepted
    if not 0 < size <= int(accepted.sum()):
        raise ValueError(f"size must be in [1, {int(accepted.sum())}]; got {size}")
    generator = torch.Generator().manual_seed((seed + _HELD_OUT_SEED + digest) % 2**63)
    order = torch.randperm(accepted.numel(), generator=generator)
    hits = torch.cumsum(accepted[order].long(), dim=0)
    cut = int(torch.searchsorted(hits, torch.tensor(size))) + 1  # the size-th accepted row
    return order[:cut]


def candidates_needed(ctx: BatchContext, size: int) -> int:
    """At most how many candidates :func:`split_batch` reads for ``size`` tested rows: a
    world's held-out set has at most ``size`` plus every rejected support row, and a few
    more join when some fail (a distributed check fetches this many rows, once)."""
    rejected = int((~ctx.accepted).sum())
    return size + rejected + max(16, size // 8)


def split_batch(
    ctx: BatchContext,
    candidates: torch.Tensor,
    eligible: torch.Tensor,
    sizes: Sequence[int],
    seed: int,
    copy_cosine: float,
) -> BatchSplit:
    """The rows of a batch the distribution tests use (module docstring).

    Args:
        ctx: what the batch tests compare with.
        candidates: ``[q, d]`` float64 unit image rows of the batch's embeddable samples, in a
            seeded random order.
        eligible: ``[q]`` bool: the candidate passed every rejecting check but the copy checks.
        sizes: grid sizes to try, largest first.
        seed: the guard's seed (the world's draw also depends on the candidates' content, so
            successive batches meet different worlds and equal batches the same one).
        copy_cosine: the copy checks' threshold (the smallest enabled one); ``inf``: no copy
            check rejects.

    Returns:
        The split; ``size`` 0 when no size in ``sizes`` finds enough rows.
    """
    if candidates.shape[0] != eligible.shape[0]:
        raise ValueError(
            f"eligible must have one flag per candidate ({candidates.shape[0]}); "
            f"got {eligible.shape[0]}"
        )
    empty = torch.zeros(0, dtype=torch.int64)
    if not sizes or candidates.shape[0] == 0:
        return BatchSplit(empty, empty, empty, 0)
    first = candidates[: sizes[0]].detach().to("cpu", torch.float64).contiguous()
    digest = int.from_bytes(
        hashlib.blake2b(first.numpy().tobytes(), digest_size=8).digest(), "little"
    )
    available = candidates.shape[0]
    for size in sizes:
        world_out = world_held_out(ctx, size, seed, digest)
        kept = torch.ones(ctx.accepted.numel(), dtype=torch.bool)
        kept[world_out] = False
        judge = _Judge(candidates, ctx.support[kept], copy_cosine)
        count = min(world_out.numel(), available)
        while True:
            passed = eligible[:count] & ~judge.copies(count)
            found = int(passed.sum())
            if found >= size:
                tested = torch.nonzero(passed).flatten()[:size]
                return BatchSplit(tested, world_out[ctx.accepted[world_out]], world_out, count)
            if count == available:
                break
            count = min(available, count + size - found)
    return BatchSplit(empty, empty, empty, 0)


class _Judge:
    """The copy flags of the first ``count`` candidates in their world (the support rows it
    keeps and the other ``count − 1`` candidates); the support part is computed once per row."""

    def __init__(self, candidates: torch.Tensor, world_support: torch.Tensor, cosine: float):
        self.candidates, self.world_support, self.cosine = candidates, world_support, cosine
        self.to_support = torch.empty(0, dtype=torch.float64)

    def copies(self, count: int) -> torch.Tensor:
        if math.isinf(self.cosine):
            return torch.zeros(count, dtype=torch.bool)
        done = self.to_support.numel()
        if count > done:
            extra = max_cosine(self.candidates[done:count], self.world_support)
            self.to_support = torch.cat([self.to_support, extra])
        rows = self.candidates[:count]
        among = max_cosine(rows, rows, exclude="self") if count > 1 else torch.full((1,), -1.0)
        return torch.maximum(self.to_support[:count], among) > self.cosine
