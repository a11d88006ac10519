"""Small, offline datasets that ship with synthguard's dependencies.

Right now this is one dataset: scikit-learn's copy of the UCI optical handwritten digits
(1,797 grayscale 8×8 images, ten classes). It needs no download, so examples, tests and the
bundled ``bundled:digits`` encoder can all use it offline.

The train/test split is fixed: ``train_test_split(test_size=0.3, random_state=0, stratify=y)``
on :func:`sklearn.datasets.load_digits`, which gives 1,257 training and 540 test images. The
bundled digits encoder was trained on the train split only, so the test split is held out.

Example:
    >>> from synthguard.datasets import load_digits
    >>> test = load_digits("test")
    >>> len(test), test.images[0].size, test.images[0].mode
    (540, (8, 8), 'L')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "CAPTION_TEMPLATES",
    "DIGITS_CONCEPT_BANK",
    "DIGITS_SPLIT_RANDOM_STATE",
    "DIGITS_TEST_SIZE",
    "DIGIT_NAMES",
    "DigitsDataset",
    "digit_caption",
    "load_digits",
]

#: English names of the ten classes; ``DIGIT_NAMES[label]`` is the name of ``label``.
DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

#: Caption templates. ``{name}`` is the English word ("seven"), ``{digit}`` the numeral ("7").
#: The first one is the canonical zero-shot prompt of the bundled digits encoder.
#: The bundled concept bank for the digits model: the digit classes themselves. The bundled
#: encoder was trained to tell digits apart, not to see slant or stroke width, so a bank of
#: such attributes would measure noise; use it with the template "a handwritten digit {name}".
DIGITS_CONCEPT_BANK: dict[str, tuple[str, ...]] = {"digit": DIGIT_NAMES}


CAPTION_TEMPLATES: tuple[str, ...] = (
    "a handwritten digit {name}",
    "a handwritten {name}",
    "the digit {digit} written in ink",
    "a photo of the number {name}",
    "a scanned digit {name}",
    "handwritten number {digit}",
    "a small image of the digit {digit}",
    "the number {name}, written by hand",
    "a low resolution picture of the digit {digit}",
    "a pen drawing of the number {name}",
)

#: ``test_size`` of the fixed split.
DIGITS_TEST_SIZE = 0.3
#: ``random_state`` of the fixed split.
DIGITS_SPLIT_RANDOM_STATE = 0
#: Seed of the per-sample caption draw (one generator over all 1,797 samples, in sklearn order).
_CAPTION_SEED = 0

Split = Literal["train", "test", "all"]


def digit_caption(label: int, rng: np.random.Generator) -> str:
    """Draw one caption for a digit, uniformly over :data:`CAPTION_TEMPLATES`.

    Args:
        label: the digit, 0-9.
        rng: the generator to draw the template with (one ``integers`` call per caption).

    Returns:
        The filled-in caption, e.g. ``"the digit 7 written in ink"``.

    Raises:
        ValueError: ``label`` is not in 0-9.
    """
    label = int(label)
    if not 0 <= label < len(DIGIT_NAMES):
        raise ValueError(f"label must be in 0-9, got {label}")
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return template.format(name=DIGIT_NAMES[label], digit=label)


@dataclass(frozen=True)
class DigitsDataset:
    """One split of the sklearn digits.

    Attributes:
        split: which split this is (``"train"``, ``"test"`` or ``"all"``).
        pixels: ``uint8`` array of shape ``(n, 8, 8)``, ``round(v * 255 / 16)`` of sklearn's 0-16
            values; white ink on black, as sklearn gives it.
        labels: ``int64`` array of shape ``(n,)``, the digit of each sample.
        label_names: the class names, ``label_names[label]`` (``"zero"`` ... ``"nine"``).
        captions: one caption per sample, drawn with :func:`digit_caption` from a fixed seed (a
            sample gets the same caption whichever split it is loaded through).
        ids: stable sample ids, ``"digits-NNNN"`` with ``NNNN`` the index in sklearn's order.
    """

    split: str
    pixels: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    captions: list[str]
    ids: list[str]
    _images: list[Image.Image] | None = field(default=None, repr=False, compare=False)

    @property
    def images(self) -> list[Image.Image]:
        """The samples as 8×8 PIL images in mode ``"L"`` (same values as :attr:`pixels`).

        Raises:
            AttributeError: the dataset was loaded with ``as_images=False``; use :attr:`pixels`.
        """
        if self._images is None:
            raise AttributeError(
                "this DigitsDataset was loaded with as_images=False; use .pixels instead, "
                "or load_digits(..., as_images=True)"
            )
        return self._images

    def __len__(self) -> int:
        return len(self.labels)


@lru_cache(maxsize=1)
def _load_all() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Pixels (uint8), labels (int64) and captions of all 1,797 samples, in sklearn order."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    raw = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    pixels = np.rint(raw * 255.0 / 16.0).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(_CAPTION_SEED)
    captions = tuple(digit_caption(int(label), rng) for label in labels)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels, captions


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices (into sklearn's order) of the fixed train and test splits."""
    from sklearn.model_selection import train_test_split

    _, labels, _ = _load_all()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_RANDOM_STATE,
        stratify=labels,
    )
    train_idx = np.asarray(train_idx, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    train_idx.setflags(write=False)
    test_idx.setflags(write=False)
    return train_idx, test_idx


def load_digits(split: Split = "test", *, as_images: bool = True) -> DigitsDataset:
    """Load one split of the sklearn handwritten digits (offline; ships with scikit-learn).

    Args:
        split: ``"train"`` (1,257 samples), ``"test"`` (540, held out from the bundled digits
            encoder) or ``"all"`` (1,797, in sklearn's order). The split is the fixed, stratified
            ``train_test_split(test_size=0.3, random_state=0, stratify=y)``.
        as_images: also build the PIL images (``.images``). With ``False`` only ``.pixels`` is
            filled, which is faster when you want arrays.

    Returns:
        A frozen :class:`DigitsDataset`; its arrays are fresh copies, so callers may modify them.

    Raises:
        ValueError: ``split`` is not one of ``"train"``, ``"test"``, ``"all"``.
    """
    pixels_all, labels_all, captions_all = _load_all()
    if split == "all":
        indices: Sequence[int] | np.ndarray = np.arange(len(labels_all))
    elif split == "train":
        indices = _split_indices()[0]
    elif split == "test":
        indices = _split_indices()[1]
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    idx = np.asarray(indices, dtype=np.int64)
    pixels = pixels_all[idx].copy()
    images = [Image.fromarray(p) for p in pixels] if as_images else None
    return DigitsDataset(
        split=split,
        pixels=pixels,
        labels=labels_all[idx].copy(),
        label_names=list(DIGIT_NAMES),
        captions=[captions_all[i] for i in idx],
        ids=[f"digits-{i:04d}" for i in idx],
        _images=images,
    )
