"""What the batch tests see of a batch that may be split across torch.distributed ranks.

Per-sample decisions are local to each rank; the batch verdict must not be. The guard reduces
a batch to a :class:`BatchSummary` (counts, the capped row subsamples the distribution and
duplicate tests run on, and concept/label count tables) through a *shard*: :class:`LocalShard`
for one process, :class:`DistributedShard` across ranks. Both run the same code on the same
global quantities, so a sharded check equals a single-process check of the rank-ordered
concatenation: the same rows, in the same order, picked by the same seeded permutation.

A distributed summary costs four collectives per check, whatever the batch size (the fourth
only with concept banks):

1. ``all_gather`` of the per-rank row counts;
2. ``all_gather`` of 8 int64 of metadata per row (id hash, flags, labels, a 4-number content
   signature): ``64·N`` bytes for ``N`` rows on all ranks;
3. ``all_reduce`` of the candidate rows of the distribution tests and the duplicate test's
   rows, each rank filling the rows it owns (exact: the others add zeros): ``(2d + 1)`` float64
   per candidate (at most ``synthguard.checks.candidates_needed`` of them) and ``d`` per
   duplicate row;
4. ``all_reduce`` of the concept count tables (only with concept banks).

Plus a one-integer ``all_reduce`` of the verdict (any rank's reject rejects for all). Rows
with an id already seen on an earlier rank in the same check are counted once; one id with two
contents, default ids, or labels on some ranks only are errors on every rank. A rank that fails
before the first collective still joins it (with a count of -1), so the others raise instead
of waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError, SynthGuardError
from synthguard.checks import candidates_needed, split_batch
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows
from synthguard.guard._samples import SampleOutcome
from synthguard.stats._collective import collective_device
from synthguard.stats._hashing import hash_ids

__all__ = ["BatchSummary", "DistributedShard", "LocalShard", "summarise"]

_VALID, _ACCEPTED, _FLAGGED, _LABELLED, _DEFAULT_IDS, _ELIGIBLE = 1, 2, 4, 8, 16, 32
_SIGNATURE = 4  # random projections of (image, text) that tell two contents apart
_META = 4 + _SIGNATURE  # id hash, flags, label, carried label, signature bits
#: Two rows with one id are the same sample when their signatures agree this well (unit rows:
#: it allows the last-bit noise of a GPU encoder run in different batch compositions).
_SAME_CONTENT = 1e-2


@dataclass(frozen=True)
class BatchSummary:
    """A batch as the batch tests see it (all ranks together)."""

    n: int  # samples counted (padding repeats across ranks excluded)
    n_valid: int
    n_accepted: int
    n_flagged: int
    image: torch.Tensor  # [rows, d] rows the distribution tests use (0 rows: skipped)
    text: torch.Tensor
    caption_tokens: torch.Tensor | None  # [rows] their caption tokens (None: not known)
    held_out: torch.Tensor  # [rows] accepted support rows their comparison leaves out
    duplicate_image: torch.Tensor  # [dup_rows, d] embeddable rows (0 rows: skipped)
    label_counts: torch.Tensor | None  # [classes] float64 over embeddable rows
    concept_counts: dict[str, torch.Tensor] = field(default_factory=dict)  # accepted rows
    concept_by_class: dict[str, torch.Tensor] = field(default_factory=dict)  # carried labels
    world_size: int = 1
    n_repeats: int = 0  # rows not counted: their id appeared on an earlier rank


class LocalShard:
    """The whole batch is in this process."""

    world_size = 1

    def gather(self, meta: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every rank's ``[n_r, c]`` int64 metadata, rank-ordered, and this rank's offset."""
        return meta, 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks."""
        return values

    def all_true(self, value: bool) -> bool:
        """Whether ``value`` is true on every rank."""
        return value

    def fail(self) -> None:
        """Tell the other ranks this one failed before :meth:`gather` (so none waits)."""


class DistributedShard(LocalShard):
    """The batch is split across the ranks of a torch.distributed process group."""

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self.group = group
        self.world_size = dist.get_world_size(group)
        self.device = collective_device(group)

    def _sizes(self, n: int) -> list[int]:
        import torch.distributed as dist

        self.started = True
        size = torch.tensor([n], dtype=torch.int64, device=self.device)
        sizes = [torch.empty_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size, group=self.group)
        return [int(s) for s in sizes]

    def fail(self) -> None:
        if not getattr(self, "started", False):
            self._sizes(-1)  # the first collective every rank makes: a -1 says "failed"

    def all_true(self, value: bool) -> bool:
        import torch.distributed as dist

        flag = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())

    def gather(self, meta: torch.Tensor) -> tuple[torch.Tensor, int]:
        import torch.distributed as dist

        counts = self._sizes(meta.shape[0])
        failed = [rank for rank, c in enumerate(counts) if c < 0]
        if failed:
            raise SynthGuardError(
                f"rank(s) {failed} failed before the batch could be checked (their own error "
                "says why); no rank accepted anything from this batch"
            )
        padded = torch.zeros(max(counts), meta.shape[1], dtype=torch.int64, device=self.device)
        padded[: meta.shape[0]] = meta
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded, group=self.group)
        rank = dist.get_rank(self.group)
        return torch.cat([p[:c].cpu() for p, c in zip(parts, counts, strict=True)]), sum(
            counts[:rank]
        )

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if values.numel() == 0:
            return values
        out = values.to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out.cpu()


def shard_for(sync: bool | None, group: Any = None) -> LocalShard:
    """The shard a check runs on: distributed when ``sync`` (or, with ``None``, when a process
    group of more than one rank is initialised)."""
    import torch.distributed as dist
    from torch.utils.data import get_worker_info

    ready = dist.is_available() and dist.is_initialized()
    in_loader = get_worker_info() is not None  # a forked worker inherits the group: unusable
    if sync is None:
        sync = ready and not in_loader and dist.get_world_size(group) > 1
    if not sync:
        return LocalShard()
    if in_loader:
        raise InvalidInputError(
            "sync=True cannot run in a DataLoader worker process (collectives belong to the "
            "training process); call guard.check(batch, sync=True) in the training step"
        )
    if not ready:
        raise InvalidInputError(
            "sync=True needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); none is"
        )
    return DistributedShard(group)


def summarise(
    shard: LocalShard, plan: GuardPlan, rows: EmbeddedRows, outcome: SampleOutcome
) -> BatchSummary:
    """Reduce this rank's rows (all ranks call it together) to the batch's :class:`BatchSummary`.

    The rows the distribution and duplicate tests use are the plan's grid sizes for the
    batch's accepted and embeddable counts (below ``min_batch_size``: none), drawn by a seeded
    permutation over the rank-ordered batch.
    """
    image, text, labels = rows.image, rows.text, rows.labels
    valid = rows.valid
    accepted = torch.tensor([d.accepted for d in outcome.decisions], dtype=torch.bool)
    carried = [d.new_label for d in outcome.decisions]
    names = plan.reference.label_names
    num_labels = None if names is None else len(names)
    min_rows, seed = plan.config.min_batch_size, plan.config.seed
    n = image.shape[0]
    meta = torch.zeros(n, _META, dtype=torch.int64)
    ids = [d.id for d in outcome.decisions]
    meta[:, 0] = torch.from_numpy(hash_ids(ids, n, 0).view(np.int64))
    meta[:, 1] = (
        valid.long() * _VALID + accepted.long() * _ACCEPTED + outcome.flagged.long() * _FLAGGED
        + (labels is not None) * _LABELLED + rows.default_ids * _DEFAULT_IDS
        + outcome.eligible.long() * _ELIGIBLE
    )  # fmt: skip
    meta[:, 2] = torch.tensor(list(labels) if labels is not None else [-1] * n)
    meta[:, 3] = torch.tensor([-1 if c is None else c for c in carried], dtype=torch.int64)
    meta[:, 4:] = _signature(image, text).view(torch.int64)
    everyone, offset = shard.gather(meta)
    flags = everyone[:, 1]
    # Decided on the gathered metadata, so every rank raises alike (none is left waiting).
    if shard.world_size > 1 and bool((flags & _DEFAULT_IDS).any()):
        raise InvalidInputError(
            "ids must identify samples across ranks; got the default ids 0..n-1, which repeat "
            "on every rank: pass the dataset indices (PairBatch(ids=...), "
            "check_embeddings(ids=...))"
        )
    labelled = (flags & _LABELLED).bool()
    if bool(labelled.any()) and not bool(labelled.all()):
        raise InvalidInputError(
            "labels must be given on every rank or on none; some ranks' batches have labels "
            "and some do not"
        )
    counted = _first_occurrences(everyone)
    is_valid = counted & (flags & _VALID).bool()
    is_accepted = counted & (flags & _ACCEPTED).bool()
    valid_idx = torch.nonzero(is_valid).flatten()
    accepted_idx = torch.nonzero(is_accepted).flatten()

    n_rows = plan.rows_for(accepted_idx.numel())
    dup_rows = plan.duplicate_rows_for(valid_idx.numel())
    candidates = dup_pick = torch.zeros(0, dtype=torch.int64)
    context = plan.context() if n_rows >= min_rows else None
    if dup_rows >= min_rows:  # the same draws, in the same order, as one process would make
        gen = torch.Generator().manual_seed(seed)
        dup_pick = valid_idx[torch.randperm(valid_idx.numel(), generator=gen)[:dup_rows]]
        dup_pick = dup_pick.sort()[0]
        if context is not None:
            order = valid_idx[torch.randperm(valid_idx.numel(), generator=gen)]
            candidates = order[: candidates_needed(context, n_rows)]
    # Caption tokens travel as one more column (NaN where unknown, on any rank).
    tokens = rows.caption_tokens if rows.caption_tokens is not None else torch.full((n,), math.nan)
    fetched, duplicates = _fetch(
        shard,
        [
            (torch.cat([image, text, tokens.double()[:, None]], dim=1), candidates),
            (image, dup_pick),
        ],
        offset,
    )
    d = image.shape[1]
    pairs, held = fetched[:0], candidates[:0]
    if context is not None:
        split = split_batch(
            context,
            fetched[:, :d].double(),
            (everyone[candidates, 1] & _ELIGIBLE).bool(),
            plan.sizes_from(n_rows),
            seed,
            plan.copy_cosine,
        )
        tested = split.tested[candidates[split.tested].argsort()]  # in batch order
        pairs, held = fetched[tested], split.held_out
    picked_tokens = pairs[:, 2 * d]

    label_counts = None
    if bool(labelled.all()) and num_labels is not None:
        label_counts = torch.bincount(everyone[is_valid, 2], minlength=num_labels).double()
    mine = slice(offset, offset + n)
    local_accepted = torch.nonzero(is_accepted[mine]).flatten()
    local_carried = everyone[mine, 3][local_accepted]
    with_label = local_accepted[local_carried >= 0]
    tables = plan.count_concepts(image[local_accepted], None)
    if num_labels is not None and bool((everyone[is_accepted, 3] >= 0).any()):
        by_class = plan.count_concepts(image[with_label], everyone[mine, 3][with_label])
        tables.update({f"{name}/by_class": t for name, t in by_class.items()})
    tables = _sum_tables(shard, tables)
    return BatchSummary(
        n=int(counted.sum()),
        n_valid=valid_idx.numel(),
        n_accepted=accepted_idx.numel(),
        n_flagged=int((counted & (flags & _FLAGGED).bool()).sum()),
        image=pairs[:, :d],
        text=pairs[:, d : 2 * d],
        caption_tokens=None if bool(picked_tokens.isnan().any()) else picked_tokens,
        duplicate_image=duplicates,
        label_counts=label_counts,
        concept_counts={k: v for k, v in tables.items() if not k.endswith("/by_class")},
        concept_by_class={
            k.removesuffix("/by_class"): v for k, v in tables.items() if k.endswith("/by_class")
        },
        world_size=shard.world_size,
        n_repeats=int((~counted).sum()),
        held_out=held,
    )


def _signature(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[n, 4]`` float64 projections of each pair on fixed random unit directions."""
    gen = torch.Generator().manual_seed(0x5EED)
    directions = torch.randn(2 * image.shape[1], _SIGNATURE, generator=gen, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    pairs = torch.cat([image, text], dim=1).double()
    return (pairs @ directions).contiguous()


def _first_occurrences(meta: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: rows whose id no earlier row has; raises for one id with two contents."""
    keys = meta[:, 0].tolist()
    first: dict[int, int] = {}
    counted = torch.ones(len(keys), dtype=torch.bool)
    signatures = meta[:, 4:].contiguous().view(torch.float64)
    for row, key in enumerate(keys):
        if key not in first:
            first[key] = row
            continue
        counted[row] = False
        a, b = signatures[first[key]], signatures[row]
        finite_a, finite_b = bool(torch.isfinite(a).all()), bool(torch.isfinite(b).all())
        if finite_a != finite_b or (finite_a and float((a - b).abs().max()) > _SAME_CONTENT):
            raise InvalidInputError(
                f"ids must identify samples across ranks: rows {first[key]} and {row} of the "
                "rank-ordered batch share an id but differ in content (or only one of them "
                "could be embedded): pass the dataset indices as ids"
            )
    return counted


def _fetch(
    shard: LocalShard, requests: list[tuple[torch.Tensor, torch.Tensor]], offset: int
) -> list[torch.Tensor]:
    """Per ``(local rows, global indices)`` request, those rows of the rank-ordered batch, on
    every rank: one all-reduce of every request, each rank filling the rows it owns."""
    if shard.world_size == 1:
        return [local[indices - offset] for local, indices in requests]
    parts = []
    for local, indices in requests:
        mine = (indices >= offset) & (indices < offset + local.shape[0])
        part = torch.zeros(indices.numel(), local.shape[1], dtype=torch.float64)
        part[mine] = local[indices[mine] - offset].double()
        parts.append(part)
    return _sum_together(shard, parts)


def _sum_tables(shard: LocalShard, tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum count tables over ranks in one collective (every rank has the same table names)."""
    if shard.world_size == 1 or not tables:
        return tables
    names = sorted(tables)
    summed = _sum_together(shard, [tables[k].to(torch.int64) for k in names])
    return dict(zip(names, summed, strict=True))


def _sum_together(shard: LocalShard, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over ranks, all in one collective (one dtype)."""
    flat = shard.sum(torch.cat([p.reshape(-1) for p in parts]))
    out, start = [], 0
    for part in parts:
        out.append(flat[start : start + part.numel()].reshape(part.shape))
        start += part.numel()
    return out
