"""Caption text statistics: length, distinct-n, type–token ratio, repetition, empty/truncated."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import check_int, describe
from synthguard.functional._common import Result

__all__ = ["CaptionStats", "caption_stats", "simple_tokenize"]

_WORD = re.compile(r"\w+")


def simple_tokenize(text: str) -> list[str]:
    """Lower-cased Unicode word tokens (``\\w+``); punctuation is dropped.

    Example:
        >>> simple_tokenize("A cat, a CAT!")
        ['a', 'cat', 'a', 'cat']
    """
    return _WORD.findall(text.lower())


class CaptionStats(Result):
    """Text statistics of a set of captions. Lengths count tokens of non-empty captions.

    Attributes:
        n: number of captions.
        n_empty: ``None``, empty or whitespace-only captions (or with no token).
        n_truncated: captions the encoder truncated (``None`` when not reported).
        mean_length, std_length, median_length, max_length: tokens per non-empty caption
            (population std; all 0 when every caption is empty).
        mean_chars: characters per non-empty caption.
        distinct_1, distinct_2: distinct unigrams / bigrams over all unigrams / bigrams of the
            set (Li et al., 2016), n-grams taken within captions.
        type_token_ratio: mean over non-empty captions of distinct tokens / tokens.
        repeated_ngram_fraction: fraction of non-empty captions in which some ``repeat_n``-gram
            occurs more than once (degenerate repetition loops).
        repeat_n: the n of ``repeated_ngram_fraction``.
    """

    n: int
    n_empty: int
    n_truncated: int | None
    mean_length: float
    std_length: float
    median_length: float
    max_length: int
    mean_chars: float
    distinct_1: float
    distinct_2: float
    type_token_ratio: float
    repeated_ngram_fraction: float
    repeat_n: int


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _truncated_count(truncated: Any, n: int) -> int | None:
    if truncated is None:
        return None
    flags = truncated.detach().cpu().numpy() if isinstance(truncated, torch.Tensor) else truncated
    flags = np.asarray(flags)
    if flags.shape != (n,) or flags.dtype.kind not in "bi":
        raise InvalidInputError(f"truncated must be {n} booleans, got {describe(truncated)}")
    return int(flags.astype(bool).sum())


def caption_stats(
    captions: Sequence[str | None],
    *,
    truncated: Any = None,
    repeat_n: int = 3,
    tokenizer: Callable[[str], list[str]] | None = None,
) -> CaptionStats:
    """Length, diversity and degeneration statistics of captions.

    Args:
        captions: the captions; ``None`` counts as empty.
        truncated: optional ``[n]`` booleans from the encoder (``PairEmbeddings.truncated``)
            marking captions cut to the text tower's context.
        repeat_n: n-gram size for ``repeated_ngram_fraction``.
        tokenizer: ``str -> list[str]``; default :func:`simple_tokenize`.

    Example:
        >>> s = caption_stats(["a cat on a mat", "", "a dog a dog a dog"])
        >>> s.n_empty, s.max_length, s.repeated_ngram_fraction
        (1, 6, 0.5)
    """
    if isinstance(captions, (str, bytes)) or not isinstance(captions, Sequence):
        raise InvalidInputError(f"captions must be a sequence of str, got {describe(captions)}")
    repeat_n = check_int("repeat_n", repeat_n, minimum=1)
    tokenize = tokenizer or simple_tokenize
    n_truncated = _truncated_count(truncated, len(captions))
    lengths: list[int] = []
    chars: list[int] = []
    ttrs: list[float] = []
    repeated = 0
    unigrams: Counter[tuple[str, ...]] = Counter()
    bigrams: Counter[tuple[str, ...]] = Counter()
    for i, caption in enumerate(captions):
        if caption is None:
            continue
        if not isinstance(caption, str):
            raise InvalidInputError(f"captions[{i}] must be str or None, got {describe(caption)}")
        tokens = list(tokenize(caption))
        if not tokens:
            continue
        lengths.append(len(tokens))
        chars.append(len(caption.strip()))
        ttrs.append(len(set(tokens)) / len(tokens))
        unigrams.update(_ngrams(tokens, 1))
        bigrams.update(_ngrams(tokens, 2))
        counts = Counter(_ngrams(tokens, repeat_n))
        repeated += any(c > 1 for c in counts.values())

    def ratio(c: Counter[tuple[str, ...]]) -> float:
        total = sum(c.values())
        return len(c) / total if total else 0.0

    def mean(values: Sequence[float]) -> float:
        return float(statistics.fmean(values)) if values else 0.0

    return CaptionStats(
        n=len(captions),
        n_empty=len(captions) - len(lengths),
        n_truncated=n_truncated,
        mean_length=mean(lengths),
        std_length=float(statistics.pstdev(lengths)) if lengths else 0.0,
        median_length=float(statistics.median(lengths)) if lengths else 0.0,
        max_length=max(lengths, default=0),
        mean_chars=mean(chars),
        distinct_1=ratio(unigrams),
        distinct_2=ratio(bigrams),
        type_token_ratio=mean(ttrs),
        repeated_ngram_fraction=repeated / len(lengths) if lengths else 0.0,
        repeat_n=repeat_n,
    )
