"""Running the model: the preparation pool, batches queued ahead, the guarded forward pass.

:class:`ModelRunner` is the part of :class:`~synthguard.BatchedEncoder` that deals with the
hardware: it keeps preparation ``prefetch_batches`` batches ahead of the forward pass, copies
batches from pinned memory, runs them under autocast and halves the batch size on
out-of-memory. It is kept apart from ``_engine.py`` (the encoder's options and public calls)
and ``_pipeline.py`` (images and captions to rows) because it runs whatever forward function
it is given and knows nothing of samples, failures or the cache.
"""

from __future__ import annotations

import collections
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from synthguard._errors import EncoderError
from synthguard.encoders._device import autocast

__all__ = ["ModelRunner", "ahead"]

#: Guards the lazy creation of each encoder's preparation pool (threads may share an encoder).
_POOL_LOCK = threading.Lock()


class ModelRunner:
    """Forward passes over prepared batches: a base of :class:`~synthguard.BatchedEncoder`."""

    # Set by BatchedEncoder.__init__.
    batch_size: int
    prefetch_batches: int
    num_workers: int
    _pool: ThreadPoolExecutor | None
    _pool_pid: int | None

    if TYPE_CHECKING:  # BatchedEncoder's properties, declared for the type checker only

        @property
        def device(self) -> torch.device: ...
        @property
        def precision(self) -> str: ...
        @property
        def model_id(self) -> str: ...

    @property
    def _executor(self) -> ThreadPoolExecutor:
        """The preparation pool of this process. A forked child (a DataLoader worker) inherits
        the parent's pool without its threads, so waiting on it would hang forever: the child
        starts its own."""
        with _POOL_LOCK:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    self.num_workers, thread_name_prefix="synthguard-prep"
                )
                self._pool_pid = os.getpid()
            return self._pool

    def _prefetch(
        self, indices: list[int], prepare: Callable[[int], Any]
    ) -> Iterator[tuple[list[int], list[Any]]]:
        """Yield (chunk indices, prepared samples), keeping ``prefetch_batches`` chunks queued."""
        chunks = self._chunks(indices)
        submitted = ([self._executor.submit(prepare, i) for i in chunk] for chunk in chunks)
        for chunk, futures in zip(chunks, ahead(submitted, self.prefetch_batches), strict=True):
            yield chunk, [future.result() for future in futures]

    def _chunks(self, indices: list[int]) -> list[list[int]]:
        """Split sample indices into forward-pass batches of the current ``batch_size``."""
        size = self.batch_size
        return [indices[start : start + size] for start in range(0, len(indices), size)]

    def _run_model(
        self, forward: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Forward ``inputs`` in slices of ``batch_size``, halving it on out-of-memory."""
        total = next(iter(inputs.values())).shape[0]
        outputs: list[torch.Tensor] = []
        start = 0
        while start < total:
            size = min(self.batch_size, total - start)
            part = {name: value[start : start + size] for name, value in inputs.items()}
            try:
                outputs.append(self._forward(forward, part))
            except torch.OutOfMemoryError as exc:
                if size == 1:
                    raise EncoderError(
                        f"{self.model_id}: out of memory on {self.device} even at batch size 1"
                    ) from exc
                self.batch_size = max(1, size // 2)
                warnings.warn(
                    f"out of memory at batch size {size} on {self.device}; retrying at "
                    f"{self.batch_size}",
                    ResourceWarning,
                    stacklevel=2,
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += size
        return torch.cat(outputs)

    def _forward(
        self, forward: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        on_cuda = self.device.type == "cuda"
        try:
            with torch.inference_mode(), autocast(self.device, self.precision):
                moved = {
                    name: (value.pin_memory() if on_cuda else value).to(
                        self.device, non_blocking=on_cuda
                    )
                    for name, value in inputs.items()
                }
                features = forward(**moved)
            # Normalise in float32 whatever the autocast dtype was.
            return F.normalize(features.float(), dim=-1).to("cpu")
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            size = next(iter(inputs.values())).shape[0]
            raise EncoderError(
                f"{self.model_id}: the forward pass failed on a batch of {size}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def ahead(futures: Iterator[Any], depth: int) -> Iterator[Any]:
    """Yield from ``futures`` while keeping ``depth`` submissions in flight ahead of the reader."""
    queue: collections.deque[Any] = collections.deque()
    for submitted in futures:
        queue.append(submitted)
        if len(queue) > depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
