"""Best-of-N caption reranking: the "decoding budget" mitigation, scored by a frozen encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import describe, unit_rows_or_nan
from synthguard.batch import as_sample_list
from synthguard.encoders._base import Encoder
from synthguard.relabel._common import (
    Relabel,
    Score,
    caption_text,
    encoder_dim,
    is_embeddings,
    score_texts,
)

__all__ = ["CaptionChoice", "RerankResult", "best_index", "rerank_captions"]


class CaptionChoice(BaseModel):
    """The best-aligned candidate caption of one image.

    Attributes:
        index: position of the image.
        candidates: the candidates as given (a non-text candidate is shown as ``""``).
        scores: cosine of the image to each candidate; NaN for an empty or unembeddable one.
        best_index: position of the best candidate (the first one on ties); ``None`` when no
            candidate could be scored.
        best_caption: that candidate, or ``None``.
        best_score: its cosine (NaN when there is none).
        first_score: cosine of the first candidate (NaN when it is unusable).
        gain: ``best_score - first_score``; 0 when the first candidate is already the best.
        reason: why no candidate was chosen, or ``None``.
        error: the matching reason code, or ``None``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    candidates: tuple[str, ...]
    scores: tuple[Score, ...]
    best_index: int | None
    best_caption: str | None
    best_score: Score
    first_score: Score
    gain: Score
    reason: str | None = None
    error: ReasonCode | None = None


class RerankResult(BaseModel):
    """Per-image choices of :func:`rerank_captions` and their summary.

    Attributes:
        choices: one :class:`CaptionChoice` per image, in order.
        mean_gain: mean ``gain`` over images where it is defined (NaN if none).
        n_improved: images whose best candidate is not the first one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    choices: tuple[CaptionChoice, ...]
    mean_gain: Score
    n_improved: int

    @property
    def best_captions(self) -> list[str | None]:
        """The chosen caption of each image (``None`` where none could be chosen)."""
        return [c.best_caption for c in self.choices]

    def relabels(self) -> list[Relabel]:
        """Provenance per image: first candidate -> best candidate, with both scores."""
        out: list[Relabel] = []
        for c in self.choices:
            first = caption_text(c.candidates[0]) if c.candidates else None
            moved = c.best_index is not None and c.best_index != 0
            reason = c.reason or (
                f"candidate {c.best_index} beats the first by {c.gain:+.4f}"
                if moved
                else "the first candidate is already the best aligned"
            )
            out.append(
                Relabel(
                    index=c.index,
                    field="caption",
                    method="rerank",
                    old_value=first,
                    new_value=c.best_caption,
                    old_score=c.first_score,
                    new_score=c.best_score,
                    applied=moved,
                    reason=reason,
                    error=c.error,
                    candidates=c.candidates,
                    candidate_scores=c.scores,
                )
            )
        return out


def best_index(scores: Sequence[float]) -> int | None:
    """Index of the highest finite score, the first one on ties; ``None`` if none is finite.

    Example:
        >>> best_index([0.1, float("nan"), 0.3, 0.3])
        2
    """
    best: int | None = None
    for j, s in enumerate(scores):
        if math.isfinite(s) and (best is None or s > scores[best]):
            best = j
    return best


def rerank_captions(encoder: Encoder, images: Any, candidates: Any) -> RerankResult:
    """Pick, for each image, the candidate caption the frozen encoder aligns best with it.

    Spending a larger decoding budget (N samples or beams) and keeping the best-aligned
    caption is the mitigation of Hu et al. (ICMI 2025) against caption drift in self-consuming
    loops. A bad sample (an unreadable image, no candidates, only empty candidates) gets a
    reason and ``best_index=None``; the rest of the batch is unaffected.

    Args:
        encoder: the frozen grounding encoder.
        images: the images (any form :func:`~synthguard.encoders.load_image` reads), or their
            ``[n, dim]`` embeddings from ``encoder`` (a 2-D floating tensor or array; NaN rows
            mark unembeddable images).
        candidates: ``candidates[i]`` is the list of candidate captions of image ``i``.

    Returns:
        A :class:`RerankResult`.

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import load_digits
        >>> enc = sg.load_encoder("bundled:digits")
        >>> test = load_digits("test")
        >>> int(test.labels[0])
        1
        >>> result = rerank_captions(enc, test.images[:1],
        ...     [["a handwritten digit seven", "a handwritten digit one"]])
        >>> result.choices[0].best_caption, result.choices[0].gain > 0
        ('a handwritten digit one', True)
    """
    lists = _candidate_lists(candidates)
    dim = encoder_dim(encoder)
    if is_embeddings(images):
        image = unit_rows_or_nan("images", images, dim, n=len(lists))
    else:
        items = as_sample_list(images, "images")
        if len(items) != len(lists):
            raise InvalidInputError(
                f"candidates must have one list per image ({len(items)}); got {len(lists)}"
            )
        raw = encoder.encode_images(items, on_error="nan") if items else torch.zeros(0, dim)
        image = unit_rows_or_nan("image embeddings", raw, dim)
    texts = [[caption_text(c) for c in row] for row in lists]
    scores = score_texts(encoder, image, texts)
    choices = [
        _choose(i, row, texts[i], scores[i], bool(torch.isnan(image[i]).any()))
        for i, row in enumerate(lists)
    ]
    gains = [c.gain for c in choices if math.isfinite(c.gain)]
    return RerankResult(
        choices=tuple(choices),
        mean_gain=sum(gains) / len(gains) if gains else math.nan,
        n_improved=sum(1 for c in choices if c.best_index not in (None, 0)),
    )


def _choose(
    i: int, row: list[Any], texts: list[str | None], scores: list[float], no_image: bool
) -> CaptionChoice:
    # Show decoded text for bytes candidates, the raw string for blank ones, "" for non-text.
    shown = tuple(
        t if t is not None else (c if isinstance(c, str) else "")
        for c, t in zip(row, texts, strict=True)
    )
    nan = math.nan
    reason: str | None = None
    if no_image:
        reason = "the image has no finite embedding (unreadable, or it failed to encode)"
    elif not row:
        reason = "no candidate captions"
    best = None if reason else best_index(scores)
    if best is None:
        reason = reason or f"none of the {len(row)} candidates is usable (empty or not text)"
        code = ReasonCode.UNREADABLE_IMAGE if no_image else ReasonCode.EMPTY_CAPTION
        return CaptionChoice(
            index=i,
            candidates=shown,
            scores=tuple(scores),
            best_index=None,
            best_caption=None,
            best_score=nan,
            first_score=scores[0] if scores else nan,
            gain=nan,
            reason=reason,
            error=code,
        )
    return CaptionChoice(
        index=i,
        candidates=shown,
        scores=tuple(scores),
        best_index=best,
        best_caption=texts[best],
        best_score=scores[best],
        first_score=scores[0],
        gain=scores[best] - scores[0],  # NaN when the first candidate is unusable
    )


def _candidate_lists(candidates: Any) -> list[list[Any]]:
    outer = as_sample_list(candidates, "candidates")
    lists: list[list[Any]] = []
    for i, row in enumerate(outer):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise InvalidInputError(
                f"candidates[{i}] must be a list of candidate captions; got {describe(row)}"
            )
        lists.append(list(row))
    return lists
