"""The batched embedding engine: inputs -> unit-norm embeddings, as fast as the hardware allows.

Decoding and preprocessing run on a thread pool, never in the calling thread. On an accelerator
the pool works a few batches ahead of the forward pass; on CPU, where the forward pass needs
every core, it prepares each batch in parallel between forward passes. On CUDA, batches are
copied from pinned memory without blocking, run under bf16/fp16 autocast, and a batch that runs
out of memory is split in half and retried (the smaller size then sticks). One bad sample never
costs the rest of the batch: it comes back as a NaN row with a reason code, or as an error naming
its index.

:class:`BatchedEncoder` holds the options, the :class:`~synthguard.Encoder` protocol and the
public calls; the rest lives beside it, each part short enough to read whole: its base classes
``EncodingPipeline`` (``_pipeline.py``: samples to rows, around the cache) and ``ModelRunner``
(``_runner.py``: the model on the device), and ``_calls.py`` (the public calls' argument checks
and failure reports).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import torch

from synthguard._errors import EncoderError, InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import check_float, check_int
from synthguard.batch import PairBatch
from synthguard.encoders._backend import ModelBackend, hash_state_dict
from synthguard.encoders._base import EncoderFingerprint, OnError, PairEmbeddings
from synthguard.encoders._cache import EmbeddingCache
from synthguard.encoders._calls import check_on_error, non_empty, raise_or_keep, warn_truncated
from synthguard.encoders._device import resolve_device, resolve_precision
from synthguard.encoders._images import (
    DEFAULT_MAX_IMAGE_ASPECT,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
)
from synthguard.encoders._pipeline import EncodingPipeline

__all__ = ["BatchedEncoder"]


class BatchedEncoder(EncodingPipeline):
    """An image–text model behind synthguard's batching engine.

    Built by :func:`synthguard.load_encoder`; construct it directly only with your own
    :class:`ModelBackend`.

    Args:
        backend: the loaded model and its preprocessing.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device.
        precision: ``"auto"`` (bf16/fp16 autocast on CUDA, fp32 elsewhere), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``.
        batch_size: samples per forward pass; halved automatically on CUDA out-of-memory.
        num_workers: decode/preprocess threads (default: all cores up to 32 on CUDA, up to 8
            elsewhere, where the forward pass needs the cores too).
        prefetch_batches: how many batches are prepared ahead of the forward pass (default 2 on
            CUDA/MPS, 0 on CPU, where overlapping steals cores from the forward pass).
        cache_dir: folder for an on-disk embedding cache (``None``: no cache).
        progress: show a progress bar (per call overridable).
        max_image_pixels: images with more pixels are rejected as ``image_too_large``.
        max_image_bytes: image files larger than this are rejected as ``image_too_large``
            without being read (a path a source returned keeps the source's own limit).
        max_image_aspect: images whose longer side is more than this many times the shorter
            one are rejected as ``image_too_large`` (the resize would build a huge image).
        output_device: where returned embeddings live (default CPU).

    Example:
        >>> enc = load_encoder("bundled:digits")          # doctest: +SKIP
        >>> enc.encode_texts(["a handwritten seven"]).shape  # doctest: +SKIP
        torch.Size([1, 64])
    """

    def __init__(
        self,
        backend: ModelBackend,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        num_workers: int | None = None,
        prefetch_batches: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
        max_image_aspect: float | None = DEFAULT_MAX_IMAGE_ASPECT,
        output_device: str | torch.device = "cpu",
        spec: str | None = None,
    ) -> None:
        check_int("batch_size", batch_size, minimum=1)
        self._spec = spec
        if prefetch_batches is not None:
            check_int("prefetch_batches", prefetch_batches, minimum=0)
        if num_workers is not None:
            check_int("num_workers", num_workers, minimum=1)
        if max_image_pixels is not None:
            check_int("max_image_pixels", max_image_pixels, minimum=1)
        if max_image_bytes is not None:
            check_int("max_image_bytes", max_image_bytes, minimum=1)
        if max_image_aspect is not None:
            check_float("max_image_aspect", max_image_aspect, low=1.0)
        self._backend = backend
        self._device = resolve_device(device)
        self._precision = resolve_precision(precision, self._device)
        # "auto" leaves the numerics to synthguard: a guard may embed at its reference's
        # precision instead (with_precision); an explicit precision is the user's and is kept.
        self._precision_auto = precision == "auto"
        self._output_device = torch.device(output_device)
        self.requested_batch_size = batch_size
        self.batch_size = batch_size
        # On an accelerator the forward pass leaves the CPU free, so preparing batches ahead
        # hides decoding entirely. On CPU the forward already uses every core through OpenMP;
        # a decode thread running beside it stalls the OpenMP barriers and costs ~4x its own
        # CPU time (docs/benchmarks.md), so there the pool prepares each batch in parallel
        # *between* forward passes instead.
        if prefetch_batches is None:
            prefetch_batches = 0 if self._device.type == "cpu" else 2
        self.prefetch_batches = prefetch_batches
        self.progress = progress
        self.max_image_pixels = max_image_pixels
        self.max_image_bytes = max_image_bytes
        self.max_image_aspect = max_image_aspect
        # On CUDA the forward pass is cheap and decoding is the bottleneck: use every core.
        cores = os.cpu_count() or 1
        self.num_workers = num_workers or min(32 if self._device.type == "cuda" else 8, cores)
        self._cache_dir = cache_dir
        backend.module.to(self._device).eval().requires_grad_(False)
        self._pool: ThreadPoolExecutor | None = None  # made on first use, per process
        self._pool_pid: int | None = None
        self._closed = False

    # -- the Encoder protocol ---------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._backend.dim

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._device

    @property
    def precision(self) -> str:
        """Effective compute precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return self._precision

    @property
    def precision_is_auto(self) -> bool:
        """Whether :attr:`precision` was chosen by ``precision="auto"`` (not set explicitly)."""
        return self._precision_auto

    def with_precision(self, precision: str) -> BatchedEncoder:
        """This encoder at another compute precision, sharing the loaded model.

        The new engine has its own worker threads and cache key (embeddings differ by
        precision) and the same model, device and options; its fingerprint differs only in
        ``precision``. A guard uses it to embed at its reference's precision when this
        encoder's precision was ``"auto"``.

        Args:
            precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``.

        Raises:
            InvalidInputError: an unknown precision, or one the device cannot run (bf16 on a
                GPU without bf16 support).

        Example:
            >>> enc = load_encoder("bundled:digits", device="cpu")  # doctest: +SKIP
            >>> enc.with_precision("bf16").precision                # doctest: +SKIP
            'bf16'
        """
        resolved = resolve_precision(precision, self._device)
        if (
            resolved == "bf16"
            and self._device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise InvalidInputError(
                f"precision='bf16' needs a GPU with bf16 support; {self._device} has none "
                "(use precision='fp16' or 'fp32')"
            )
        self._check_open()
        if resolved == self._precision and (precision == "auto") == self._precision_auto:
            return self
        other = BatchedEncoder.__new__(BatchedEncoder)
        other.__setstate__(self.__getstate__())  # no thread pool nor cache connection
        other._precision, other._precision_auto = resolved, precision == "auto"
        if "fingerprint" in self.__dict__:  # not hashing the weights again
            other.__dict__["fingerprint"] = self.fingerprint.model_copy(
                update={"precision": resolved}
            )
        return other

    @property
    def context_length(self) -> int:
        """Maximum caption length in tokens, special tokens included."""
        return self._backend.context_length

    @property
    def spec(self) -> str | None:
        """The :func:`~synthguard.load_encoder` spec this encoder was loaded from (``None``
        when built directly): a reference built with it records it, so a guard on the loaded
        reference can load the same model."""
        return self._spec

    @property
    def model_id(self) -> str:
        """The spec the model was loaded from."""
        return self._backend.model_id

    @property
    def module(self) -> torch.nn.Module:
        """The underlying model (frozen, in eval mode)."""
        return self._backend.module

    @cached_property
    def fingerprint(self) -> EncoderFingerprint:
        """Model id, weights hash, preprocessing, dim, precision and library versions."""
        return EncoderFingerprint(
            model_id=self._backend.model_id,
            backend=self._backend.backend_name,
            weights_sha256=hash_state_dict(self._backend.module),
            preprocessing=self._backend.preprocessing(),
            dim=self._backend.dim,
            precision=self._precision,
            versions=self._backend.versions(),
        )

    @cached_property
    def cache(self) -> EmbeddingCache | None:
        """The on-disk embedding cache, or ``None`` when ``cache_dir`` was not given."""
        if self._cache_dir is None:
            return None
        # Keyed by the model *and* the precision: a bf16 row is not an fp32 row.
        key = f"{self.fingerprint.digest}/{self._precision}"
        return EmbeddingCache(self._cache_dir, key, self.dim)

    def encode_images(
        self, images: Sequence[Any], *, on_error: OnError = "raise", progress: bool | None = None
    ) -> torch.Tensor:
        """Embed images into ``[n, dim]`` float32 unit vectors, in input order.

        Args:
            images: paths, bytes, PIL images, HWC uint8 arrays or CHW tensors, mixed freely.
            on_error: ``"raise"`` raises :class:`InvalidInputError` naming the first bad index;
                ``"nan"`` returns a NaN row for each undecodable image.
            progress: show a progress bar (default: the encoder's setting).

        Raises:
            InvalidInputError: bad argument, or an undecodable image with ``on_error="raise"``.
            EncoderError: the model failed for a whole batch (e.g. out of memory at size 1).
        """
        check_on_error(on_error)
        items = non_empty(images, "images")
        vectors, failures = self._encode_images(items, progress)
        raise_or_keep("images", failures, on_error)
        return vectors.to(self._output_device)

    def encode_texts(
        self, texts: Sequence[Any], *, on_error: OnError = "raise", progress: bool | None = None
    ) -> torch.Tensor:
        """Embed captions into ``[n, dim]`` float32 unit vectors, in input order.

        Captions longer than :attr:`context_length` are truncated keeping the end-of-text token
        (a :class:`CaptionTruncatedWarning` gives the count). Empty, whitespace-only or
        non-text captions raise, or give NaN rows with ``on_error="nan"``.
        """
        check_on_error(on_error)
        items = non_empty(texts, "texts")
        vectors, failures, truncated = self._encode_texts(items, progress)
        raise_or_keep("texts", failures, on_error)
        warn_truncated(int(truncated.sum()), len(items), self.context_length)
        return vectors.to(self._output_device)

    def embed(self, batch: PairBatch, *, progress: bool | None = None) -> PairEmbeddings:
        """Embed a :class:`~synthguard.PairBatch`; bad samples are reported, never fatal.

        Returns:
            :class:`PairEmbeddings` whose ``errors`` maps each sample that could not be embedded
            to ``unreadable_image``, ``empty_caption``, ``unreadable_caption`` or
            ``encoding_failed`` (with details), and whose ``truncated`` flags long captions.
        """
        if not isinstance(batch, PairBatch):
            raise InvalidInputError(f"batch must be a PairBatch; got {type(batch).__name__}")
        image, image_failures = self._encode_images(batch.images, progress)
        text, text_failures, truncated = self._encode_texts(batch.captions, progress)
        errors: dict[int, ReasonCode] = {}
        details: dict[int, str] = {}
        for index in sorted(set(image_failures) | set(text_failures)):
            found = [f for f in (image_failures.get(index), text_failures.get(index)) if f]
            errors[index] = found[0][0]
            details[index] = "; ".join(f"{code.value}: {detail}" for code, detail in found)
        return PairEmbeddings(
            image=image.to(self._output_device),
            text=text.to(self._output_device),
            errors=errors,
            error_details=details,
            truncated=truncated,
        )

    def close(self) -> None:
        """Stop the worker threads and close the cache; the encoder cannot be used afterwards."""
        self._closed = True
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=True)
        if self._cache_dir is not None and "cache" in self.__dict__ and self.cache is not None:
            self.cache.close()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers under "spawn" (and Ray) receive the encoder pickled: the thread
        # pool and the cache's SQLite connection stay behind and are made anew there.
        state = dict(self.__dict__)
        state.pop("cache", None)
        state["_pool"], state["_pool_pid"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __enter__(self) -> BatchedEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"BatchedEncoder(model_id={self.model_id!r}, dim={self.dim}, device='{self.device}', "
            f"precision={self.precision!r}, batch_size={self.batch_size})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise EncoderError(f"{self.model_id}: this encoder was closed; load a new one")
