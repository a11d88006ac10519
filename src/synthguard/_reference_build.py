"""Building blocks of :meth:`Reference.build` / :meth:`Reference.from_embeddings`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from synthguard._calibration import max_cosine
from synthguard._errors import InvalidInputError
from synthguard._validation import as_embeddings, check_int, describe, normalize_rows
from synthguard.data import PairBatch
from synthguard.encoders import Encoder, EncoderFingerprint, embed_pairs
from synthguard.relabel import ZeroShotLabeler
from synthguard.stats import EmbeddingStats

__all__ = ["DimOnly", "embed_into", "loo_badness", "new_stats", "unit_rows", "zero_shot_setup"]


class DimOnly:
    """Stands in for the encoder when class embeddings are given (only ``dim`` is read)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim


def embed_into(
    stats: EmbeddingStats, encoder: Encoder, batch: PairBatch, chunk: int
) -> dict[str, int]:
    """Embed ``batch`` chunk by chunk into ``stats``; returns reason -> samples skipped."""
    skipped: Counter[str] = Counter()
    for start in range(0, len(batch), chunk):
        part = batch.select(range(start, min(start + chunk, len(batch))))
        emb = embed_pairs(encoder, part)
        skipped.update(str(code) for code in emb.errors.values())
        ok = torch.nonzero(emb.valid).flatten().tolist()
        if ok:
            stats.update(
                emb.image[ok].double(),
                emb.text[ok].double(),
                labels=None if part.labels is None else [part.labels[i] for i in ok],
                ids=[part.ids[i] for i in ok],
            )
    return dict(skipped)


def zero_shot_setup(
    encoder: Encoder | None,
    dim: int,
    label_names: Sequence[str] | None,
    templates: str | Sequence[str],
    class_embeddings: Any,
    logit_scale: float | None,
) -> tuple[torch.Tensor | None, float | None, tuple[str, ...]]:
    """``(class embeddings, logit scale, templates)`` of the label check, or all empty."""
    if label_names is None or (class_embeddings is None and encoder is None):
        return None, None, ()
    labeler = ZeroShotLabeler(
        encoder if encoder is not None else DimOnly(dim),  # type: ignore[arg-type]
        label_names,
        templates,
        logit_scale=logit_scale,
        class_embeddings=class_embeddings,
    )
    return labeler.class_embeddings.double(), labeler.effective_logit_scale, labeler.templates


def unit_rows(name: str, value: Any, dim: int | None = None) -> torch.Tensor:
    """``[n, d]`` float64 CPU unit rows; non-finite or zero rows are an error."""
    return normalize_rows(name, as_embeddings(name, value, dim=dim).to("cpu"))


def new_stats(
    dim: int,
    fingerprint: EncoderFingerprint | None,
    support_size: int,
    seed: int,
    label_names: Sequence[str] | None,
    labels: Any,
) -> EmbeddingStats:
    """Empty statistics for a reference (the bottom-k sample is the support)."""
    if labels is not None and label_names is None:
        raise InvalidInputError("labels were given without label_names; pass label_names=[...]")
    if label_names is not None and (isinstance(label_names, str) or len(label_names) < 2):
        raise InvalidInputError(
            f"label_names must be a sequence of at least 2 names; got {describe(label_names)}"
        )
    return EmbeddingStats(
        dim,
        fingerprint=None if fingerprint is None else fingerprint.digest,
        sample_size=check_int("support_size", support_size, minimum=8),
        seed=seed,
        num_labels=None if labels is None or label_names is None else len(label_names),
    )


def loo_badness(
    image: torch.Tensor,
    text: torch.Tensor,
    radii: torch.Tensor,
    labels: torch.Tensor,
    labeler: ZeroShotLabeler | None,
) -> torch.Tensor:
    """Leave-one-out badness of each support pair, one column per check (larger is worse).

    Columns: ``-alignment``; the k-NN radius (k-th nearest *other* support row); the largest
    cosine to another support image; with a labeler, ``-P(given label)`` where the frozen
    model disagrees and ``-inf`` (never flagged) where it agrees.
    """
    columns = [-(image * text).sum(dim=1), radii, max_cosine(image, exclude="self")]
    if labeler is not None:
        pred = labeler.predict(image)
        given = pred.probabilities.gather(1, labels[:, None])[:, 0]
        column = torch.full(labels.shape, -math.inf, dtype=torch.float64)
        disagree = (pred.labels >= 0) & (pred.labels != labels)
        column[disagree] = -given[disagree].double()
        columns.append(column)
    return torch.stack(columns, dim=1).to(torch.float64)
