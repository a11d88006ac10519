"""Concept banks: along which human-readable attribute did a batch move?

A :class:`ConceptBank` holds named groups of text prompts (``{"setting": ["indoors",
"outdoors"], ...}``), embedded once by the frozen grounding encoder. Every image is assigned to
one concept per group (argmax cosine), or to the ``"uncertain"`` bucket when its top-1 minus
top-2 cosine margin is below a threshold calibrated on the reference (the ``uncertain_rate``
quantile of the reference's margins). :func:`concept_drift` compares a batch's concept mix with
the reference's: the two distributions, Jensen–Shannon divergence, the χ² homogeneity test, a
permutation test of the largest standardised change of one concept (the test the guard uses:
exact for small counts, and far more powerful than the omnibus χ² when one concept moves, which
is how a generator drops or amplifies a class), the largest mover, and *tail loss*: concepts
present in the reference that vanish or fall below half their share (the tails go first,
Shumailov et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from synthguard._errors import IncompatibleStatsError, InvalidInputError
from synthguard._validation import check_float, check_int, describe, unit_rows_or_nan
from synthguard.encoders import Encoder, EncoderFingerprint
from synthguard.functional import label_drift
from synthguard.relabel import ZeroShotLabeler

__all__ = ["UNCERTAIN", "ConceptBank", "ConceptDrift", "concept_drift"]

#: Name of the bucket for images whose best concept wins by less than the calibrated margin.
UNCERTAIN = "uncertain"


class ConceptDrift(BaseModel):
    """How one concept group's mix in a batch differs from the reference.

    Attributes:
        group: the group name.
        concepts: concept names (the last is ``"uncertain"``).
        reference_share / batch_share: the two distributions, same order.
        reference_count / batch_count: the counts they come from.
        js_divergence: Jensen–Shannon divergence in bits, in ``[0, 1]``.
        statistic: the largest two-proportion z statistic over concepts (pooled variance).
        p_value: its permutation p-value, ``(1 + #{resamples at least as large}) / (R + 1)``,
            the pooled samples split at random (multivariate hypergeometric) ``R`` times.
        chi2 / chi2_p_value: the omnibus χ² homogeneity test, for reference (asymptotic;
            unreliable when expected counts are below 5).
        largest_mover: the concept whose share changed most; ``largest_change`` is
            ``batch − reference`` share.
        tail_loss: concepts at least ``min_share`` of the reference whose batch share is below
            half their reference share.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str
    concepts: tuple[str, ...]
    reference_share: tuple[float, ...]
    batch_share: tuple[float, ...]
    reference_count: int
    batch_count: int
    js_divergence: float
    statistic: float
    p_value: float
    chi2: float
    chi2_p_value: float
    largest_mover: str
    largest_change: float
    tail_loss: tuple[str, ...]


def concept_drift(
    batch_counts: Any,
    reference_counts: Any,
    concepts: Sequence[str],
    *,
    group: str = "concepts",
    min_share: float = 0.05,
    resamples: int = 2000,
    seed: int = 0,
) -> ConceptDrift:
    """Compare two count vectors over the same concepts (see :class:`ConceptDrift`).

    Example:
        >>> d = concept_drift([50, 10, 0, 0], [20, 20, 20, 0], ["cat", "dog", "bird", "uncertain"])
        >>> d.largest_mover, d.tail_loss, d.p_value < 0.001
        ('cat', ('bird',), True)
    """
    a = torch.as_tensor(np.asarray(batch_counts, dtype=np.float64))
    b = torch.as_tensor(np.asarray(reference_counts, dtype=np.float64))
    names = tuple(str(c) for c in concepts)
    if a.shape != b.shape or a.ndim != 1 or a.numel() != len(names):
        raise InvalidInputError(
            f"batch_counts and reference_counts must both have one count per concept "
            f"({len(names)}); got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if float(a.sum()) <= 0 or float(b.sum()) <= 0:
        raise InvalidInputError("batch_counts and reference_counts must each count something")
    drift = label_drift(a, b)
    p_share, q_share = a / a.sum(), b / b.sum()
    observed = float(_max_z(a.numpy()[None], b.numpy()[None])[0])
    p_value = _permutation_p(a, b, observed, check_int("resamples", resamples, minimum=1), seed)
    change = p_share - q_share
    mover = int(change.abs().argmax())
    min_share = check_float("min_share", min_share, low=0.0, high=1.0)
    tails = tuple(
        names[i]
        for i in range(len(names))
        if names[i] != UNCERTAIN and q_share[i] >= min_share and p_share[i] < q_share[i] / 2
    )
    return ConceptDrift(
        group=group, concepts=names,
        reference_share=tuple(q_share.tolist()), batch_share=tuple(p_share.tolist()),
        reference_count=int(b.sum()), batch_count=int(a.sum()),
        js_divergence=drift.js_divergence, statistic=observed, p_value=p_value,
        chi2=drift.chi2, chi2_p_value=drift.p_value,
        largest_mover=names[mover], largest_change=float(change[mover]),
        tail_loss=tails,
    )  # fmt: skip


def _max_z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the largest |two-proportion z| over columns (pooled variance; 0 if constant)."""
    n_a, n_b = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    pooled = (a + b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(a / n_a - b / n_b) / se, 0.0)
    return np.asarray(z.max(axis=-1))


def _permutation_p(a: torch.Tensor, b: torch.Tensor, observed: float, r: int, seed: int) -> float:
    """P-value of the max-z statistic under random relabelling of the pooled samples."""
    rng = np.random.default_rng(seed)
    pooled = (a + b).numpy().astype(np.int64)
    draws = rng.multivariate_hypergeometric(pooled, int(a.sum()), size=r).astype(np.float64)
    stats = _max_z(draws, pooled[None, :] - draws)
    return float((1 + np.sum(stats >= observed - 1e-9)) / (r + 1))


class ConceptBank:
    """Named groups of concept prompts, embedded by the frozen grounding encoder.

    Args:
        groups: group name -> concept prompts (at least two per group, unique).
        encoder: the frozen encoder (the reference's; fingerprints must match).
        templates: prompt templates containing ``{name}``, ensembled as in CLIP.
        uncertain_rate: share of the reference's images put in the ``"uncertain"`` bucket of
            each group (sets the calibrated margin).

    Example:
        >>> import synthguard as sg
        >>> from synthguard.datasets import DIGITS_CONCEPT_BANK, load_digits
        >>> enc = sg.load_encoder("bundled:digits")
        >>> bank = ConceptBank(DIGITS_CONCEPT_BANK, enc, templates="a handwritten digit {name}")
        >>> real = load_digits("test")
        >>> bank.calibrate(enc.encode_images(real.images))
        >>> counts = bank.counts(enc.encode_images(real.images[:20]))
        >>> int(counts["digit"].sum())
        20
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[str]],
        encoder: Encoder,
        *,
        templates: str | Sequence[str] = ("{name}",),
        uncertain_rate: float = 0.05,
    ) -> None:
        if not isinstance(groups, Mapping) or not groups:
            raise InvalidInputError(f"groups must map names to prompts; got {describe(groups)}")
        self.groups = {str(g): tuple(str(c) for c in cs) for g, cs in groups.items()}
        for name, concepts in self.groups.items():
            if UNCERTAIN in concepts:
                raise InvalidInputError(f"group {name!r}: {UNCERTAIN!r} is reserved")
        self.uncertain_rate = check_float("uncertain_rate", uncertain_rate, low=0.0, high=1.0)
        self.fingerprint: EncoderFingerprint | None = encoder.fingerprint
        self.templates = templates
        self.embeddings = {
            name: ZeroShotLabeler(
                encoder, concepts, templates, logit_scale=1.0
            ).class_embeddings.double()
            for name, concepts in self.groups.items()
        }
        self.margins: dict[str, float] | None = None

    @classmethod
    def from_parts(
        cls,
        groups: Mapping[str, Sequence[str]],
        embeddings: Mapping[str, torch.Tensor],
        *,
        fingerprint: EncoderFingerprint | None,
        margins: Mapping[str, float] | None,
        templates: str | Sequence[str],
        uncertain_rate: float,
    ) -> ConceptBank:
        """Rebuild a bank from stored parts (no encoder needed), e.g. from a reference file."""
        bank = cls.__new__(cls)
        bank.groups = {str(g): tuple(str(c) for c in cs) for g, cs in groups.items()}
        bank.uncertain_rate = check_float("uncertain_rate", uncertain_rate, low=0.0, high=1.0)
        bank.fingerprint = fingerprint
        bank.templates = templates
        bank.embeddings = {g: torch.as_tensor(embeddings[g]).double() for g in bank.groups}
        for group, concepts in bank.groups.items():
            if tuple(bank.embeddings[group].shape[:1]) != (len(concepts),):
                raise InvalidInputError(
                    f"embeddings[{group!r}] must have one row per concept ({len(concepts)})"
                )
        bank.margins = None if margins is None else {g: float(m) for g, m in margins.items()}
        return bank

    def concepts(self, group: str) -> tuple[str, ...]:
        """The group's concepts plus the ``"uncertain"`` bucket (the count vector's order)."""
        return (*self.groups[group], UNCERTAIN)

    def calibrate(self, reference_images: Any) -> None:
        """Set each group's margin: the ``uncertain_rate`` quantile of the reference's margins."""
        self.margins = {}
        for group, (_, margin) in self._scores(reference_images).items():
            finite = margin[torch.isfinite(margin)]
            if finite.numel() == 0:
                raise InvalidInputError("reference_images must hold at least one finite row")
            self.margins[group] = float(torch.quantile(finite, self.uncertain_rate))

    def assign(self, image_embeddings: Any) -> dict[str, torch.Tensor]:
        """Per group, ``[n]`` concept index (``len(group)`` = uncertain, -1 = NaN row)."""
        if self.margins is None:
            raise InvalidInputError("calibrate the bank on reference images before assigning")
        out = {}
        for group, (best, margin) in self._scores(image_embeddings).items():
            index = best.clone()
            index[margin < self.margins[group]] = len(self.groups[group])
            index[~torch.isfinite(margin)] = -1
            out[group] = index
        return out

    def counts(self, image_embeddings: Any, labels: Any = None, num_labels: int = 0,
               ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Per group, counts over :meth:`concepts`; with labels, ``[num_labels, C + 1]``."""
        out = {}
        for group, index in self.assign(image_embeddings).items():
            size = len(self.groups[group]) + 1
            keep = index >= 0
            if labels is None:
                out[group] = torch.bincount(index[keep], minlength=size).to(torch.int64)
            else:
                classes = check_int("num_labels", num_labels, minimum=1)
                lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)[keep]
                flat = torch.bincount(lab * size + index[keep], minlength=classes * size)
                out[group] = flat.reshape(classes, size).to(torch.int64)
        return out

    def count_tables(self, num_labels: int | None = None) -> dict[str, tuple[int, ...]]:
        """Shapes for :class:`~synthguard.EmbeddingStats` ``count_tables`` (exactly mergeable):
        ``concept/<group>`` and, with ``num_labels``, ``concept/<group>/by_class``."""
        out: dict[str, tuple[int, ...]] = {}
        for group, concepts in self.groups.items():
            out[f"concept/{group}"] = (len(concepts) + 1,)
            if num_labels is not None:
                out[f"concept/{group}/by_class"] = (num_labels, len(concepts) + 1)
        return out

    def update_stats(self, stats: Any, image_embeddings: Any, labels: Any = None) -> None:
        """Add this batch's concept counts to ``stats`` (built with :meth:`count_tables`)."""
        for group, counts in self.counts(image_embeddings).items():
            stats.update_counts(f"concept/{group}", counts)
        if labels is not None:
            by_class = self.counts(image_embeddings, labels, stats.num_labels or 0)
            for group, counts in by_class.items():
                stats.update_counts(f"concept/{group}/by_class", counts)

    def check_encoder(self, fingerprint: EncoderFingerprint | None) -> None:
        """Raise :class:`IncompatibleStatsError` for another encoder's fingerprint."""
        mine = self.fingerprint
        if fingerprint is not None and mine is not None and fingerprint.digest != mine.digest:
            raise IncompatibleStatsError(
                "the concept bank was embedded by a different encoder than the reference's "
                f"({mine.model_id} vs {fingerprint.model_id})"
            )

    def _scores(self, image_embeddings: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        first = next(iter(self.embeddings.values()))
        x = unit_rows_or_nan("image_embeddings", image_embeddings, first.shape[1])
        out = {}
        for group, emb in self.embeddings.items():
            sims = x @ emb.T
            top = sims.topk(2, dim=1)
            best = top.indices[:, 0]
            margin = top.values[:, 0] - top.values[:, 1]
            margin[torch.isnan(margin)] = math.nan
            out[group] = (best, margin)
        return out

    def __repr__(self) -> str:
        sizes = {g: len(c) for g, c in self.groups.items()}
        return f"ConceptBank({sizes}, calibrated={self.margins is not None})"
