"""Caption statistics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import synthguard.functional as F
from synthguard import InvalidInputError


def test_hand_computed_example() -> None:
    captions = ["A cat on a mat.", "", None, "a dog a dog a dog", "   ", "Two cats"]
    s = F.caption_stats(captions, truncated=torch.tensor([0, 0, 0, 1, 0, 0], dtype=torch.bool))
    assert (s.n, s.n_empty, s.n_truncated) == (6, 3, 1)
    lengths = [5, 6, 2]  # tokens of the non-empty captions
    assert s.mean_length == pytest.approx(np.mean(lengths))
    assert s.std_length == pytest.approx(np.std(lengths))
    assert (s.median_length, s.max_length) == (5.0, 6)
    assert s.mean_chars == pytest.approx((15 + 17 + 8) / 3)
    # unigrams: a×5, cat, on, mat, dog×3, two, cats -> 7 distinct of 13
    assert s.distinct_1 == pytest.approx(7 / 13)
    # bigrams: (a cat)(cat on)(on a)(a mat) | (a dog)(dog a)(a dog)(dog a)(a dog) | (two cats)
    assert s.distinct_2 == pytest.approx(7 / 10)
    assert s.type_token_ratio == pytest.approx(np.mean([4 / 5, 2 / 6, 2 / 2]))
    assert s.repeated_ngram_fraction == pytest.approx(1 / 3)  # only "a dog a" repeats
    assert s.repeat_n == 3
    assert s.to_dict()["n_empty"] == 3


def test_truncated_unknown_and_all_empty() -> None:
    s = F.caption_stats(["", None])
    assert s.n_truncated is None
    assert (s.n_empty, s.mean_length, s.distinct_1, s.type_token_ratio) == (2, 0.0, 0.0, 0.0)
    assert F.caption_stats([]).n == 0


def test_custom_tokenizer_and_repeat_n() -> None:
    s = F.caption_stats(["abab"], tokenizer=list, repeat_n=2)
    assert s.max_length == 4
    assert s.repeated_ngram_fraction == 1.0  # ("a", "b") twice
    assert F.simple_tokenize("Ein Hund, ein HUND!") == ["ein", "hund", "ein", "hund"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: F.caption_stats("a cat"), r"captions must be a sequence of str"),
        (lambda: F.caption_stats(["a", 3]), r"captions\[1\] must be str or None, got 3"),  # type: ignore[list-item]
        (lambda: F.caption_stats(["a"], truncated=[True, False]), r"truncated must be 1 booleans"),
        (lambda: F.caption_stats(["a"], repeat_n=0), r"repeat_n must be >= 1, got 0"),
    ],
)
def test_errors(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]
