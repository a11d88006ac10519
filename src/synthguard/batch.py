"""``PairBatch``: the one input container every synthguard entry point takes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError

__all__ = ["PairBatch", "as_sample_list"]


def as_sample_list(value: Any, name: str) -> list[Any]:
    """Turn a batch-like argument into a list of samples, refusing ambiguous forms.

    A list/tuple is taken as is; a 4-D tensor/array (N images) or 1-D array is split along its
    first axis. A bare string, bytes or single image is refused: wrapping it in a list is the
    caller's decision, not ours to guess.
    """
    if isinstance(value, (str, bytes, bytearray)):
        raise InvalidInputError(
            f"{name} must be a sequence of samples; got a single {type(value).__name__} "
            f"(wrap it in a list: [{name[:-1] if name.endswith('s') else name}])"
        )
    if isinstance(value, (AbstractSet, Mapping)):
        # A set has no order, and a mapping's keys are not its samples: pairing them with
        # images would be silent chance.
        raise InvalidInputError(
            f"{name} must be an ordered sequence of samples (list, tuple, tensor or array); "
            f"got a {type(value).__name__}"
        )
    if isinstance(value, torch.Tensor | np.ndarray):
        if value.ndim == 0:
            raise InvalidInputError(f"{name} must be a sequence of samples; got a 0-d array")
        return list(value)
    if isinstance(value, Sequence):
        return list(value)
    if hasattr(value, "__iter__") and not hasattr(value, "size"):
        return list(value)
    raise InvalidInputError(
        f"{name} must be a sequence (list, tuple, tensor or array) of samples; "
        f"got {type(value).__name__}"
    )


@dataclass(frozen=True, eq=False)
class PairBatch:
    """A batch of (synthetic) image–caption pairs, optionally with class labels and sample ids.

    Images may be file paths, encoded bytes, PIL images, HWC uint8 arrays or CHW tensors, mixed
    freely. A caption may be ``None`` or empty: such a sample is not dropped but rejected later
    with the reason ``empty_caption``.

    Args:
        images: one image per sample.
        captions: one caption per sample.
        labels: optional integer class label per sample.
        ids: optional unique, hashable id per sample (default ``0..n-1``). Ids key the
            deterministic samples kept by :class:`~synthguard.EmbeddingStats` and deduplicate
            padded samples across distributed ranks.

    Example:
        >>> batch = PairBatch(images=["a.jpg", "b.jpg"], captions=["a cat", "a dog"])
        >>> len(batch)
        2
    """

    images: list[Any]
    captions: list[Any]
    labels: list[int] | None = None
    ids: list[Hashable] = field(default_factory=list)

    def __init__(
        self,
        images: Any,
        captions: Any,
        labels: Any = None,
        ids: Any = None,
    ) -> None:
        image_list = as_sample_list(images, "images")
        caption_list = as_sample_list(captions, "captions")
        n = len(image_list)
        if n == 0:
            raise InvalidInputError("images must contain at least one sample; got an empty batch")
        _check_length("captions", caption_list, n)
        label_list = None if labels is None else _labels(as_sample_list(labels, "labels"), n)
        id_list = list(range(n)) if ids is None else _ids(as_sample_list(ids, "ids"), n)
        object.__setattr__(self, "images", image_list)
        object.__setattr__(self, "captions", caption_list)
        object.__setattr__(self, "labels", label_list)
        object.__setattr__(self, "ids", id_list)
        object.__setattr__(self, "_ids_given", ids is not None)

    @property
    def ids_given(self) -> bool:
        """Whether ids were passed (``False``: the default ``0..n-1``)."""
        return bool(getattr(self, "_ids_given", True))

    def __len__(self) -> int:
        return len(self.images)

    def select(self, indices: Sequence[int]) -> PairBatch:
        """A new batch with the samples at ``indices`` (in that order), ids preserved."""
        picked = [int(i) for i in indices]
        if not picked:
            raise InvalidInputError("indices must select at least one sample; got none")
        return PairBatch(
            images=[self.images[i] for i in picked],
            captions=[self.captions[i] for i in picked],
            labels=None if self.labels is None else [self.labels[i] for i in picked],
            ids=[self.ids[i] for i in picked],
        )


def _check_length(name: str, values: list[Any], n: int) -> None:
    if len(values) != n:
        raise InvalidInputError(
            f"{name} must have one entry per image (len(images) = {n}); got {len(values)}"
        )


def _labels(values: list[Any], n: int) -> list[int]:
    _check_length("labels", values, n)
    out: list[int] = []
    for i, value in enumerate(values):
        if isinstance(value, torch.Tensor | np.ndarray):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InvalidInputError(
                f"labels[{i}] must be an integer class index; got {value!r} "
                f"({type(value).__name__})"
            )
        if value < 0:
            raise InvalidInputError(f"labels[{i}] must be >= 0; got {value}")
        out.append(int(value))
    return out


def _ids(values: list[Any], n: int) -> list[Hashable]:
    _check_length("ids", values, n)
    normalised: list[Hashable] = [
        v.item() if isinstance(v, torch.Tensor | np.generic) else v for v in values
    ]
    seen: dict[Hashable, int] = {}
    for i, value in enumerate(normalised):
        if not isinstance(value, Hashable):
            raise InvalidInputError(f"ids[{i}] must be hashable; got {type(value).__name__}")
        if value in seen:
            raise InvalidInputError(
                f"ids must be unique; ids[{i}] = {value!r} repeats ids[{seen[value]}]"
            )
        seen[value] = i
    return normalised
