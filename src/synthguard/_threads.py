"""CPU thread budgets: how many cores synthguard's own statistics may use.

The batch tests' null (``synthguard.checks.batch_null``) runs in worker threads of one torch
thread each; a :class:`~synthguard.Guard` inside a training job uses ``GuardConfig.threads`` of
them (default :func:`default_threads`), offline work (``Reference.build(batch_sizes=...)``,
the CLI) every available core. docs/guard.md, "Threads", has the measurements.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["available_threads", "default_threads", "torch_threads"]


def available_threads() -> int:
    """Cores this process may run on (its CPU affinity, which containers set; else the count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """A guard's default budget inside a training job: a quarter of the cores, 1 to 4.

    The trainer and its data loaders want the cores: with a trainer busy on both cores of a
    2-core machine, the per-resample null with default torch threads ran 6.6× slower than idle
    (oversubscription), the stacked null in one thread 1.8× (docs/benchmarks.md).
    """
    return max(1, min(4, available_threads() // 4))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads in *this* thread (restored after).

    torch's intra-op setting is per thread here, so a training job's other threads are not
    affected.
    """
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads != before:
            torch.set_num_threads(before)
