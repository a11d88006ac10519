"""The process group the multi-process tests start: gloo on CPU by default, NCCL on CUDA with
``SYNTHGUARD_TEST_BACKEND=nccl`` (``benchmarks/gpu_check.py`` runs them so on a machine with
two or more GPUs: rank r on ``cuda:r``)."""

from __future__ import annotations

import os

import pytest
import torch

BACKEND = os.environ.get("SYNTHGUARD_TEST_BACKEND", "gloo")


def init_group(rank: int, world: int, folder: str) -> None:
    """Join the test's group through a rendezvous file in ``folder``."""
    import torch.distributed as dist

    if BACKEND == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        BACKEND, init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )


def need_ranks(world: int) -> None:
    """Skip when NCCL has fewer GPUs than ranks (gloo runs any number on CPU)."""
    if BACKEND == "nccl" and torch.cuda.device_count() < world:
        pytest.skip(f"NCCL with {world} ranks needs {world} GPUs")
