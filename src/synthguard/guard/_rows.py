"""``EmbeddedRows``: a batch after embedding, the one input of :func:`decide`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from synthguard._reasons import ReasonCode
from synthguard.relabel import Relabel

__all__ = ["EmbeddedRows", "mark_unembedded"]


@dataclass
class EmbeddedRows:
    """One rank's batch as the decision sees it: unit rows and what is known per sample.

    Attributes:
        image, text: ``[n, d]`` float64 unit rows; NaN rows could not be embedded.
        ids: one id per sample (unique across ranks, except padding repeats).
        labels: given class labels, or ``None``.
        errors, details: reason code and sentence of each sample that could not be embedded.
        caption_relabels: re-captioning records by sample (applied or not).
        truncated: ``[n]`` bool, captions embedded truncated (``None``: unknown).
        caption_tokens: ``[n]`` float64 tokens per (final) caption (``None``: no captions).
        default_ids: the ids are the default ``0..n-1`` (refused across ranks).
    """

    image: torch.Tensor
    text: torch.Tensor
    ids: list[Any]
    labels: list[int] | None = None
    errors: dict[int, ReasonCode] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)
    caption_relabels: dict[int, Relabel] = field(default_factory=dict)
    truncated: torch.Tensor | None = None
    caption_tokens: torch.Tensor | None = None
    default_ids: bool = False

    @property
    def valid(self) -> torch.Tensor:
        """``[n]`` bool: the sample could be embedded."""
        out = torch.ones(self.image.shape[0], dtype=torch.bool)
        out[list(self.errors)] = False
        return out


def mark_unembedded(
    image: torch.Tensor, text: torch.Tensor, errors: dict[int, ReasonCode],
    details: dict[int, str],
) -> None:  # fmt: skip
    """Add ``encoding_failed`` for NaN rows (from ``unit_rows_or_nan``) not yet marked."""
    for name, x in (("image", image), ("text", text)):
        for i in torch.nonzero(torch.isnan(x).any(dim=1)).flatten().tolist():
            errors.setdefault(i, ReasonCode.ENCODING_FAILED)
            details.setdefault(i, f"the {name} embedding is NaN, infinite or zero")
