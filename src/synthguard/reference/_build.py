"""Building a reference: embed real pairs into statistics, then score the support.

:func:`embed_into` streams pairs through the encoder in chunks into an
:class:`~synthguard.EmbeddingStats` (memory bounded by its bottom-k support) and keeps the
caption token counts of the rows that are in the support. :func:`support_badness` scores every
support pair leave-one-out with every available per-sample check of the registry.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synthguard._errors import InvalidInputError
from synthguard._validation import (
    as_embeddings,
    check_int,
    describe,
    normalize_rows,
    unit_rows_or_nan,
)
from synthguard.batch import PairBatch
from synthguard.checks import SAMPLE_CHECKS, SampleCheck, SupportToScore
from synthguard.encoders import Encoder, EncoderFingerprint, embed_pairs
from synthguard.functional import simple_tokenize
from synthguard.relabel import ZeroShotLabeler
from synthguard.stats import EmbeddingStats
from synthguard.stats._hashing import hash_rows

__all__ = [
    "SupportTokens",
    "available_checks",
    "caption_tokens",
    "embed_into",
    "new_stats",
    "support_badness",
    "unit_rows",
    "zero_shot_setup",
]


def caption_tokens(captions: Sequence[Any]) -> torch.Tensor:
    """``[n]`` float64 :func:`~synthguard.functional.simple_tokenize` tokens per caption (NaN:
    not text)."""
    return torch.tensor(
        [len(simple_tokenize(c)) if isinstance(c, str) else math.nan for c in captions],
        dtype=torch.float64,
    )


class SupportTokens:
    """Caption token counts of the rows in a growing bottom-k support, keyed by row content.

    The support keeps rows, not captions; a row's float64 image and text bits identify it, so
    each chunk's counts are kept by that key and pruned to the rows still in the support.
    """

    def __init__(self, support_size: int) -> None:
        self._cap = 4 * support_size
        self._tokens: dict[int, float] = {}

    def add(self, image: torch.Tensor, text: torch.Tensor, tokens: torch.Tensor) -> None:
        """Remember the counts of rows just added to the statistics."""
        self._tokens.update(zip(_keys(image, text), tokens.tolist(), strict=True))

    def prune(self, stats: EmbeddingStats) -> None:
        """Forget rows that left the support (only when the map has grown; amortised)."""
        if len(self._tokens) > self._cap:
            keep = set(_keys(stats.sample("image"), stats.sample("text")))
            self._tokens = {k: v for k, v in self._tokens.items() if k in keep}

    def of_support(self, stats: EmbeddingStats) -> torch.Tensor:
        """``[s]`` token counts of the support rows, in support order."""
        keys = _keys(stats.sample("image"), stats.sample("text"))
        return torch.tensor([self._tokens.get(k, math.nan) for k in keys], dtype=torch.float64)


def _keys(image: torch.Tensor, text: torch.Tensor) -> list[int]:
    rows = torch.cat([image, text], dim=1).to(torch.float64).numpy()
    return [int(v) for v in hash_rows(np.ascontiguousarray(rows), 0)]


def embed_into(
    stats: EmbeddingStats, encoder: Encoder, batch: PairBatch, chunk: int
) -> tuple[dict[str, int], torch.Tensor]:
    """Embed ``batch`` chunk by chunk into ``stats``.

    Returns:
        reason -> samples skipped (not embeddable), and the support rows' caption tokens.
    """
    skipped: Counter[str] = Counter()
    tokens = SupportTokens(stats.sample_size)
    for start in range(0, len(batch), chunk):
        part = batch.select(range(start, min(start + chunk, len(batch))))
        emb = embed_pairs(encoder, part)
        skipped.update(str(code) for code in emb.errors.values())
        ok = torch.nonzero(emb.valid).flatten().tolist()
        if ok:
            image, text = emb.image[ok].double(), emb.text[ok].double()
            stats.update(
                image,
                text,
                labels=None if part.labels is None else [part.labels[i] for i in ok],
                ids=[part.ids[i] for i in ok],
            )
            tokens.add(image, text, caption_tokens([part.captions[i] for i in ok]))
            tokens.prune(stats)
    return dict(skipped), tokens.of_support(stats)


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
    if class_embeddings is not None:  # checked against the reference's dim, not the rows'
        class_embeddings = unit_rows_or_nan(
            "class_embeddings", class_embeddings, dim, n=len(label_names)
        )
    labeler = ZeroShotLabeler(
        encoder, label_names, templates, logit_scale=logit_scale, class_embeddings=class_embeddings
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


def available_checks(*, labels: bool, captions: bool) -> tuple[SampleCheck, ...]:
    """The registry's checks a reference can calibrate, in registry order."""
    have = {"labels": labels, "captions": captions}
    return tuple(c for c in SAMPLE_CHECKS.values() if all(have[need] for need in c.needs))


def support_badness(support: SupportToScore, checks: Sequence[SampleCheck]) -> torch.Tensor:
    """``[s, len(checks)]`` leave-one-out badness of every support pair (larger is worse)."""
    columns = [check.badness(check.score_support(support)) for check in checks]
    return torch.stack(columns, dim=1).to(torch.float64)
