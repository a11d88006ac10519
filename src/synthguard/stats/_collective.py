"""The two collectives :class:`~synthguard.EmbeddingStats` needs, on plain tensors.

gloo reduces CPU tensors and NCCL CUDA ones: :func:`collective_device` says where a group's
tensors must live, and both helpers move their input there and the result back to the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from synthguard._errors import InvalidInputError

__all__ = ["all_gather_same", "all_reduce_sum", "collective_device"]


def collective_device(group: Any = None) -> torch.device:
    """Where collectives' tensors must live: the current CUDA device for NCCL, else CPU."""
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _require_group() -> Any:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise InvalidInputError(
            "all_reduce needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group); none is"
        )
    return dist


def all_reduce_sum(values: torch.Tensor, group: Any = None) -> torch.Tensor:
    """The element-wise sum of ``values`` over the ranks of ``group`` (a new CPU tensor)."""
    dist = _require_group()
    out = values.to(collective_device(group)).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out.cpu()


def all_gather_same(value: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """Every rank's ``value`` (all of one shape), rank-ordered, on the CPU."""
    dist = _require_group()
    local = value.to(collective_device(group))
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    return [p.cpu() for p in parts]
