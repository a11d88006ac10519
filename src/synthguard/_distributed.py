"""torch.distributed support for :class:`~synthguard.EmbeddingStats`: exact, two collectives.

Every sum field is float64 and flattens into one vector, reduced by a single ``all_reduce``;
the bottom-k samples of both modalities travel in one ``all_gather`` of a fixed-size packed
int64 tensor (rows as their float64 bits, then key, tiebreak, label and a validity flag), so
every rank ends with exactly the statistics one process would have computed on all the data.
gloo for CPU tensors, NCCL for CUDA (the tensors go to the current CUDA device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from synthguard._errors import InvalidInputError

if TYPE_CHECKING:
    from synthguard.stats import EmbeddingStats

__all__ = [
    "all_reduce_stats",
    "collective_device",
    "merge_packed",
    "pack_samples",
    "unpack_samples",
]

_MODALITIES = ("image", "text")
_SUFFIXES = ("", "_keys", "_tiebreak", "_labels")


def all_reduce_stats(stats: EmbeddingStats, group: Any = None) -> EmbeddingStats:
    """Replace ``stats`` in place by the merge of every rank's statistics; returns it."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise InvalidInputError(
            "all_reduce needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); none is"
        )
    device = collective_device(group)
    flat = stats._flat_sums().to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    stats._load_flat_sums(flat.cpu())
    if stats.sample_size:
        packed = pack_samples(stats).to(device)
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, packed, group=group)
        unpack_samples(stats, [g.cpu() for g in gathered])
    return stats


def collective_device(group: Any = None) -> torch.device:
    """Where collectives' tensors must live: the current CUDA device for NCCL, else CPU."""
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def pack_samples(stats: EmbeddingStats) -> torch.Tensor:
    """``[2, sample_size, dim + 4]`` int64: both modalities' samples, padded, with a flag."""
    k, d = stats.sample_size, stats.dim
    out = torch.zeros(2, k, d + 4, dtype=torch.int64)
    for m, modality in enumerate(_MODALITIES):
        rows, keys, tiebreak, labels = (stats._state[f"{modality}_sample{x}"] for x in _SUFFIXES)
        n = rows.shape[0]
        out[m, :n, :d] = rows.contiguous().view(torch.int64)  # the exact float64 bits
        out[m, :n, d], out[m, :n, d + 1], out[m, :n, d + 2] = keys, tiebreak, labels
        out[m, :n, d + 3] = 1
    return out


def unpack_samples(stats: EmbeddingStats, parts: list[torch.Tensor]) -> None:
    """Set ``stats``' samples to the bottom-k of the packed ``parts`` (its sums untouched)."""
    d = stats.dim
    for m, modality in enumerate(_MODALITIES):
        rows = torch.cat([p[m][p[m][:, d + 3] == 1] for p in parts])
        stats._store_sample(
            modality,
            rows[:, :d].contiguous().view(torch.float64),
            rows[:, d].contiguous(),
            rows[:, d + 1].contiguous(),
            rows[:, d + 2].contiguous(),
        )


def merge_packed(template: EmbeddingStats, stacked: torch.Tensor) -> torch.Tensor:
    """The packed bottom-k merge of packed samples stacked along dim 0 (``template`` gives
    ``dim`` and ``sample_size``; it is left unchanged)."""
    scratch = template._empty_like(None)
    unpack_samples(scratch, list(stacked))
    return pack_samples(scratch)
