"""PairBatch construction and validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg


def test_pair_batch_accepts_sequences_tensors_and_defaults_ids() -> None:
    batch = sg.PairBatch(
        images=torch.zeros(3, 3, 8, 8), captions=("a", "b", "c"), labels=np.arange(3)
    )
    assert len(batch) == 3 and batch.ids == [0, 1, 2] and batch.labels == [0, 1, 2]
    picked = batch.select([2, 0])
    assert picked.captions == ["c", "a"] and picked.ids == [2, 0] and picked.labels == [2, 0]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"images": [], "captions": []}, "at least one sample"),
        ({"images": [1, 2], "captions": ["a"]}, r"captions must have one entry per image .* got 1"),
        ({"images": "x.png", "captions": ["a"]}, "images must be a sequence"),
        ({"images": [1], "captions": ["a"], "labels": [1.5]}, r"labels\[0\] must be an integer"),
        ({"images": [1], "captions": ["a"], "labels": [-1]}, r"labels\[0\] must be >= 0"),
        ({"images": [1, 2], "captions": ["a", "b"], "ids": ["k", "k"]}, "ids must be unique"),
        ({"images": [1], "captions": ["a"], "ids": [[1]]}, "must be hashable"),
        ({"images": 5, "captions": ["a"]}, "images must be a sequence"),
    ],
)
def test_pair_batch_errors_name_argument_constraint_and_value(kwargs: dict, fragment: str) -> None:
    with pytest.raises(sg.InvalidInputError, match=fragment):
        sg.PairBatch(**kwargs)


def test_pair_batch_is_frozen() -> None:
    batch = sg.PairBatch(images=[1], captions=["a"])
    with pytest.raises(AttributeError):
        batch.captions = ["b"]  # type: ignore[misc]


@pytest.mark.parametrize(
    "captions",
    [{"a", "b"}, frozenset({"a", "b"}), {"x": "a", "y": "b"}, {"a": 1, "b": 2}.keys()],
    ids=["set", "frozenset", "dict", "dict keys"],
)
def test_unordered_captions_are_refused(captions: Any) -> None:
    """Issue 16: a set or dict of captions was paired with the images in hash order."""
    images = [np.zeros((4, 4, 3), dtype=np.uint8)] * 2
    with pytest.raises(sg.InvalidInputError, match="ordered sequence"):
        sg.PairBatch(images, captions)
