"""From samples to rows: each modality's preparation, the cache around the model, failures.

:class:`EncodingPipeline` is the part of :class:`~synthguard.BatchedEncoder` that turns a list
of images or captions into ``[n, dim]`` rows: rows the cache holds are read, the rest are
prepared on the pool and run by :class:`~synthguard.encoders._runner.ModelRunner`, and fresh
rows are cached. A sample that cannot be embedded becomes a reason code beside a NaN row
instead of failing its batch; the public calls (``_engine.py``) decide whether that raises.
It is kept apart from ``_engine.py`` so the encoder's options and public calls read in one
sitting.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from synthguard._reasons import ReasonCode
from synthguard.encoders._backend import ModelBackend
from synthguard.encoders._base import Failure as _Failure
from synthguard.encoders._base import check_caption
from synthguard.encoders._cache import EmbeddingCache
from synthguard.encoders._images import ImageDecodeError, content_key, load_image
from synthguard.encoders._runner import ModelRunner, ahead

__all__ = ["EncodingPipeline"]


class EncodingPipeline(ModelRunner):
    """Images and captions to unit rows: a base of :class:`~synthguard.BatchedEncoder`."""

    # Set by BatchedEncoder.__init__.
    _backend: ModelBackend
    progress: bool
    max_image_pixels: int | None
    max_image_bytes: int | None
    max_image_aspect: float | None

    if TYPE_CHECKING:  # BatchedEncoder's members, declared for the type checker only

        @property
        def dim(self) -> int: ...
        @property
        def context_length(self) -> int: ...
        @property
        def cache(self) -> EmbeddingCache | None: ...
        def _check_open(self) -> None: ...

    # -- images -------------------------------------------------------------------------------
    def _encode_images(
        self, items: Sequence[Any], progress: bool | None
    ) -> tuple[torch.Tensor, dict[int, _Failure]]:
        self._check_open()
        out = torch.full((len(items), self.dim), math.nan, dtype=torch.float32)
        failures: dict[int, _Failure] = {}
        todo, keys = self._from_cache("image", items, out, self._image_key)
        bar = self._bar(len(items), "images", progress)
        bar.update(len(items) - len(todo))
        for indices, prepared in self._prefetch(todo, lambda i: self._prepare_image(items[i])):
            ok: list[int] = []
            tensors: list[torch.Tensor] = []
            for index, result in zip(indices, prepared, strict=True):
                if isinstance(result, torch.Tensor):
                    ok.append(index)
                    tensors.append(result)
                else:
                    failures[index] = result
            if ok:
                pixels = torch.stack(tensors)
                features = self._run_model(self._backend.image_features, {"pixel_values": pixels})
                self._store("image", ok, features, out, failures, keys)
            bar.update(len(indices))
        bar.close()
        return out, failures

    def _image_key(self, item: Any) -> str:
        return content_key(item, max_bytes=self.max_image_bytes)

    def _prepare_image(self, item: Any) -> torch.Tensor | _Failure:
        # Runs on a worker thread; anything a codec throws becomes this sample's failure.
        try:
            image = load_image(
                item, max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes,
                max_aspect=self.max_image_aspect,
            )  # fmt: skip
            return self._backend.preprocess(image)
        except ImageDecodeError as exc:
            return exc.reason, str(exc)
        except Exception as exc:
            return ReasonCode.UNREADABLE_IMAGE, f"{type(exc).__name__}: {exc}"

    # -- texts --------------------------------------------------------------------------------
    def _encode_texts(
        self, items: Sequence[Any], progress: bool | None
    ) -> tuple[torch.Tensor, dict[int, _Failure], torch.Tensor]:
        self._check_open()
        out = torch.full((len(items), self.dim), math.nan, dtype=torch.float32)
        truncated = torch.zeros(len(items), dtype=torch.bool)
        failures: dict[int, _Failure] = {}
        texts: dict[int, str] = {}
        for index, item in enumerate(items):
            checked = check_caption(item)
            if isinstance(checked, str):
                texts[index] = checked
            else:
                failures[index] = checked
        valid = list(texts)
        counts = self._backend.token_counts([texts[i] for i in valid]) if valid else []
        for index, count in zip(valid, counts, strict=True):
            truncated[index] = count > self.context_length
        todo, keys = self._from_cache("text", [texts.get(i) for i in range(len(items))], out)
        todo = [i for i in todo if i in texts]
        bar = self._bar(len(valid), "captions", progress)
        bar.update(len(valid) - len(todo))
        chunks = self._chunks(todo)
        futures = (
            self._executor.submit(self._backend.tokenize, [texts[i] for i in c]) for c in chunks
        )
        for indices, future in zip(chunks, ahead(futures, self.prefetch_batches), strict=True):
            features = self._run_model(self._backend.text_features, future.result())
            self._store("text", indices, features, out, failures, keys)
            bar.update(len(indices))
        bar.close()
        return out, failures, truncated

    # -- shared machinery ---------------------------------------------------------------------
    def _store(
        self,
        modality: str,
        indices: list[int],
        features: torch.Tensor,
        out: torch.Tensor,
        failures: dict[int, _Failure],
        keys: list[str | None] | None,
    ) -> None:
        finite = torch.isfinite(features).all(dim=1) & (features.norm(dim=1) > 0.5)
        fresh: list[tuple[str, torch.Tensor]] = []
        for row, index in enumerate(indices):
            if not finite[row]:
                failures[index] = (
                    ReasonCode.ENCODING_FAILED,
                    f"the model returned a non-finite or zero {modality} embedding",
                )
                continue
            out[index] = features[row]
            key = keys[index] if keys is not None else None
            if key is not None:
                fresh.append((key, features[row]))
        if self.cache is not None and fresh:
            self.cache.put_many(modality, fresh)

    def _from_cache(
        self,
        modality: str,
        items: Sequence[Any],
        out: torch.Tensor,
        key_fn: Callable[[Any], str] | None = None,
    ) -> tuple[list[int], list[str | None] | None]:
        """Fill ``out`` from the cache; return the indices still to encode and their keys."""
        if self.cache is None:
            return list(range(len(items))), None
        keys = list(self._executor.map(lambda item: _safe_key(item, key_fn), items))
        hits = self.cache.get_many(modality, [k for k in keys if k is not None])
        todo: list[int] = []
        for index, key in enumerate(keys):
            if key is not None and key in hits:
                out[index] = hits[key]
            else:
                todo.append(index)
        return todo, keys

    def _bar(self, total: int, unit: str, progress: bool | None) -> tqdm[Any]:
        show = self.progress if progress is None else progress
        return tqdm(total=total, desc=f"embedding {unit}", unit=unit[:-1], disable=not show)


def _safe_key(item: Any, key_fn: Callable[[Any], str] | None) -> str | None:
    if key_fn is None:  # captions: the key is the hash of the exact string (lone surrogates too)
        if not isinstance(item, str):
            return None
        return hashlib.sha256(item.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        return key_fn(item)
    except Exception:  # unreadable now: let decoding report the precise reason
        return None
