"""Shared pieces of :mod:`synthguard.relabel`: the provenance record and caption scoring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict

from synthguard._errors import InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import describe, unit_rows_or_nan
from synthguard.encoders._base import Encoder, check_caption

__all__ = [
    "Relabel",
    "Score",
    "caption_text",
    "encoder_dim",
    "is_embeddings",
    "score_texts",
]


def _nan_if_none(value: Any) -> Any:
    return math.nan if value is None else value


#: A cosine that may be undefined: NaN in Python, ``null`` in JSON, and ``null`` reads back as
#: NaN, so records survive ``model_dump_json`` / ``model_validate_json``.
Score = Annotated[float, BeforeValidator(_nan_if_none)]


class Relabel(BaseModel):
    """Provenance of one proposed change to a sample's label or caption.

    Every tool in :mod:`synthguard.relabel` returns one record per sample it looked at, applied
    or not, so a report can always show what the sample had, what the frozen model proposed and
    how well each aligns with the image.

    Attributes:
        index: position of the sample in the input.
        field: ``"label"`` or ``"caption"``.
        method: ``"zero_shot"`` (class prompts), ``"rerank"`` (best of given candidates) or
            ``"recaption"`` (best of generated candidates).
        old_value: what the sample had (``None`` when it had nothing usable).
        new_value: what the frozen model proposed (``None`` when it proposed nothing).
        old_score: cosine of the image to ``old_value`` (NaN when undefined).
        new_score: cosine of the image to ``new_value`` (NaN when undefined).
        applied: whether ``new_value`` replaces ``old_value``.
        reason: why it was or was not applied, in words.
        error: the reason code when the sample could not be processed at all.
        candidates: every caption candidate considered, in order (captions only).
        candidate_scores: cosine of each candidate to the image (NaN for an unusable one).
        generator: the model that generated the candidates (recaptioning only).

    Example:
        >>> r = Relabel(index=0, field="label", method="zero_shot", old_value=3, new_value=8,
        ...             old_score=0.25, new_score=0.5, applied=True, reason="relabeled")
        >>> r.gain
        0.25
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    field: Literal["label", "caption"]
    method: Literal["zero_shot", "rerank", "recaption"]
    old_value: int | str | None
    new_value: int | str | None
    old_score: Score
    new_score: Score
    applied: bool
    reason: str
    error: ReasonCode | None = None
    candidates: tuple[str, ...] = ()
    candidate_scores: tuple[Score, ...] = ()
    generator: str | None = None

    @property
    def gain(self) -> float:
        """``new_score - old_score`` (NaN when either is undefined)."""
        return self.new_score - self.old_score

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (NaN stays NaN; ``model_dump_json`` writes null)."""
        return self.model_dump()


def encoder_dim(encoder: Encoder) -> int:
    """The encoder's embedding dimension, checked (user encoders are duck-typed)."""
    dim = getattr(encoder, "dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InvalidInputError(
            f"encoder must implement synthguard.encoders.Encoder (a positive int .dim); "
            f"got {type(encoder).__name__} with dim={dim!r}"
        )
    return dim


def is_embeddings(value: Any) -> bool:
    """True for a 2-D floating tensor/array: embeddings, never a batch of images.

    A batch of images is 3-D (grayscale) or 4-D, so the rank alone tells the two apart.
    """
    if isinstance(value, torch.Tensor):
        return value.ndim == 2 and value.is_floating_point()
    if isinstance(value, np.ndarray):
        return value.ndim == 2 and value.dtype.kind == "f"
    return False


def caption_text(item: Any) -> str | None:
    """The caption as usable text, or ``None`` (empty, whitespace, not text)."""
    checked = check_caption(item)
    return checked if isinstance(checked, str) else None


def score_texts(
    encoder: Encoder, image: torch.Tensor, texts: Sequence[Sequence[str | None]]
) -> list[list[float]]:
    """Cosine of image ``i`` to each text of ``texts[i]``; NaN for ``None`` or unembeddable text.

    Every distinct string is encoded once across the whole batch: best-of-N candidates repeat
    often (sampling, beams that converge), and the text tower is the expensive part.
    """
    unique = list(dict.fromkeys(t for row in texts for t in row if t is not None))
    vectors: dict[str, torch.Tensor] = {}
    if unique:
        emb = unit_rows_or_nan(
            "encoder.encode_texts output", _encode(encoder, unique), image.shape[1]
        )
        vectors = dict(zip(unique, emb, strict=True))
    scores: list[list[float]] = []
    for i, row in enumerate(texts):
        # One dot product per distinct text, so equal captions get bit-identical scores and
        # ties break by position (BLAS rounds the same row differently at different offsets).
        distinct = [t for t in dict.fromkeys(row) if t is not None]
        cos: dict[str | None, float] = {None: math.nan}
        if distinct:
            values = torch.stack([vectors[t] for t in distinct]) @ image[i]
            cos.update(zip(distinct, values.tolist(), strict=True))
        scores.append([cos[t] for t in row])
    return scores


def _encode(encoder: Encoder, texts: list[str]) -> torch.Tensor:
    out = encoder.encode_texts(texts, on_error="nan")
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(texts):
        raise InvalidInputError(
            f"encoder.encode_texts must return a [{len(texts)}, dim] tensor; got {describe(out)}"
        )
    return out
