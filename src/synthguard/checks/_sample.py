"""The per-sample checks: one registry entry each, the only place a check is defined.

A check scores a batch row (against the reference support) and, leave-one-out, a support row
(against the rest of the support). The support's scores calibrate the check's threshold
jointly with the other enabled checks (:mod:`synthguard.checks._conformal`); a batch row is
flagged when its badness (``score``, negated when smaller is worse) is strictly above it.

To add a check, add one :class:`SampleCheck` to :data:`SAMPLE_CHECKS`, its name to
:data:`SampleCheckName`, a :class:`~synthguard.ReasonCode` of the same name, and its tests
(docs/design.md, "How to add a per-sample check").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

import torch

from synthguard._reasons import ReasonCode
from synthguard.checks._geometry import kth_distance, max_cosine, nearest_cosine
from synthguard.relabel import ZeroShotPrediction

__all__ = [
    "SAMPLE_CHECKS",
    "Needs",
    "RowsToScore",
    "SampleCheck",
    "SampleCheckName",
    "Scores",
    "SupportToScore",
]

SampleCheckName = Literal[
    "low_alignment",
    "off_manifold",
    "reference_copy",
    "near_duplicate",
    "label_mismatch",
    "long_caption",
]
#: What a check needs beyond embeddings: class labels (and class embeddings on the reference),
#: or caption token counts.
Needs = Literal["labels", "captions"]


class Scores(NamedTuple):
    """A check's scores in its own units, where it can fire (``None``: everywhere), and, for a
    score measured against one other image, that image (the report shows it)."""

    value: torch.Tensor  # [n] float64, NaN where undefined
    fires: torch.Tensor | None = None  # [n] bool
    # [n] int64 row the score was measured against (-1: none): of the scored rows themselves
    # for a within-batch check, else of the support
    partner: torch.Tensor | None = None


@dataclass(frozen=True)
class RowsToScore:
    """The embeddable rows of a batch, as the per-sample checks see them.

    Attributes:
        image, text: ``[m, d]`` float64 unit rows.
        support: ``[s, d]`` the reference support's image rows.
        k: neighbourhood size of the k-NN checks.
        labels: ``[m]`` given labels, or ``None``.
        prediction: the frozen model's zero-shot prediction of the rows (with labels).
        caption_tokens: ``[m]`` float64 tokens per caption (NaN: unknown), or ``None``.
    """

    image: torch.Tensor
    text: torch.Tensor
    support: torch.Tensor
    k: int
    labels: torch.Tensor | None = None
    prediction: ZeroShotPrediction | None = None
    caption_tokens: torch.Tensor | None = None


class SupportToScore:
    """The reference support, scored leave-one-out (each row against the others).

    Args:
        image, text: ``[s, d]`` float64 unit rows.
        radii: ``[s]`` k-NN radius of each row within the support (itself excluded).
        labels: ``[s]`` labels (``-1`` where none), or ``None``.
        prediction: the frozen model's zero-shot prediction of the rows (with labels).
        caption_tokens: ``[s]`` float64 tokens per caption, or ``None``.
    """

    def __init__(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        radii: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        prediction: ZeroShotPrediction | None = None,
        caption_tokens: torch.Tensor | None = None,
    ) -> None:
        self.image, self.text, self.radii = image, text, radii
        self.labels, self.prediction, self.caption_tokens = labels, prediction, caption_tokens

    @cached_property
    def nearest_cosine(self) -> torch.Tensor:
        """``[s]`` largest cosine to another support image (shared by two checks: O(s²·d))."""
        return max_cosine(self.image, exclude="self")


@dataclass(frozen=True)
class SampleCheck:
    """One calibrated per-sample check.

    Attributes:
        name: the check's name in ``GuardConfig.sample_checks`` and its reason code.
        score: the score's name in ``SampleDecision.scores`` / ``thresholds``.
        larger_is_worse: the score's direction (badness is ``score`` or ``-score``).
        score_rows: scores of a batch's embeddable rows.
        score_support: leave-one-out scores of the support rows (the calibration column).
        words: the reject's detail, formatted with ``v`` (score), ``t`` (threshold), ``k``,
            ``pred``, ``conf`` and ``given`` (the zero-shot prediction and the given label).
        needs: what the reference and the batch must carry for the check to run.
        default: enabled by a default :class:`~synthguard.GuardConfig`.
        conformal_p: report a conformal p-value among the support's scores (off where the
            support's leave-one-out score is only the threshold's stand-in).
        within_batch: the score compares a batch row with the batch's other rows, not with the
            support, so its flags are not exchangeable with the support's calibration: they
            reject the sample but are not counted by the ``flag_rate`` test (the
            ``duplicate_rate`` test judges them).
        label_policy: a flag is a label disagreement the guard's ``label_policy`` resolves
            (relabel, keep or reject) instead of a reject.
        copy_score: the score is a largest cosine to another image (a copy check): the rows
            the distribution tests use are judged by it again among the rows a resample of the
            null meets (:func:`~synthguard.checks.split_batch`).
    """

    name: SampleCheckName
    score: str
    larger_is_worse: bool
    score_rows: Callable[[RowsToScore], Scores]
    score_support: Callable[[SupportToScore], Scores]
    words: str
    needs: frozenset[Needs] = frozenset()
    default: bool = True
    conformal_p: bool = True
    label_policy: bool = False
    within_batch: bool = False
    copy_score: bool = False

    @property
    def reason(self) -> ReasonCode:
        """The reason code of this check's rejects."""
        return ReasonCode(self.name)

    @property
    def sign(self) -> float:
        """Turns the score into badness (larger is worse)."""
        return 1.0 if self.larger_is_worse else -1.0

    def badness(self, scores: Scores) -> torch.Tensor:
        """``[n]`` float64 badness; ``-inf`` where the check cannot fire, NaN where undefined."""
        out = self.sign * scores.value.to(torch.float64)
        if scores.fires is not None:
            out = torch.where(scores.fires, out, torch.full_like(out, -math.inf))
        return out

    def natural(self, badness_threshold: float) -> float:
        """A badness threshold back in the score's units."""
        return self.sign * badness_threshold


def _given_probability(
    prediction: ZeroShotPrediction | None, labels: torch.Tensor | None, n: int
) -> Scores:
    if prediction is None or labels is None:
        return Scores(torch.full((n,), math.nan, dtype=torch.float64))
    given = prediction.probabilities.gather(1, labels.clamp_min(0)[:, None])[:, 0].double()
    disagree = (prediction.labels >= 0) & (prediction.labels != labels) & (labels >= 0)
    return Scores(given, disagree)


def _nearest(
    x: torch.Tensor, y: torch.Tensor | None = None, *, exclude: Literal["later"] | None = None
) -> tuple[torch.Tensor, None, torch.Tensor]:
    value, partner = nearest_cosine(x, y, exclude=exclude)
    return value, None, partner


def _tokens(tokens: torch.Tensor | None, n: int) -> Scores:
    if tokens is None:
        return Scores(torch.full((n,), math.nan, dtype=torch.float64))
    return Scores(tokens.double())


_CHECKS = (
    SampleCheck(
        name="low_alignment",
        score="alignment",
        larger_is_worse=False,
        score_rows=lambda r: Scores((r.image * r.text).sum(dim=1)),
        score_support=lambda s: Scores((s.image * s.text).sum(dim=1)),
        words="image–caption cosine {v:.4f} < {t:.4f}",
    ),
    SampleCheck(
        name="off_manifold",
        score="knn_distance",
        larger_is_worse=True,
        score_rows=lambda r: Scores(kth_distance(r.image, r.support, r.k)),
        score_support=lambda s: Scores(s.radii),
        words="distance to the {k}-th nearest real image {v:.4f} > {t:.4f}",
    ),
    SampleCheck(
        name="reference_copy",
        score="reference_cosine",
        larger_is_worse=True,
        score_rows=lambda r: Scores(*_nearest(r.image, r.support)),
        score_support=lambda s: Scores(s.nearest_cosine),
        words="cosine to the nearest real image {v:.5f} > {t:.5f}",
        copy_score=True,
    ),
    # A support row's nearest *other* support row stands in for an earlier row of the same
    # batch: real data has near neighbours, and only closer ones than real data has are flagged.
    SampleCheck(
        name="near_duplicate",
        score="batch_cosine",
        larger_is_worse=True,
        score_rows=lambda r: Scores(*_nearest(r.image, exclude="later")),
        score_support=lambda s: Scores(s.nearest_cosine),
        words="cosine to an earlier image of the batch {v:.5f} > {t:.5f}",
        conformal_p=False,
        within_batch=True,
        copy_score=True,
    ),
    SampleCheck(
        name="label_mismatch",
        score="given_label_probability",
        larger_is_worse=False,
        score_rows=lambda r: _given_probability(r.prediction, r.labels, r.image.shape[0]),
        score_support=lambda s: _given_probability(s.prediction, s.labels, s.image.shape[0]),
        words=(
            "frozen model predicts {pred} (P = {conf:.3f}); P(given label {given}) = {v:.3g} "
            "< {t:.3g}"
        ),
        needs=frozenset({"labels"}),
        label_policy=True,
    ),
    # Opt-in: a collapsing captioner's captions grow (3.3x in the paper's loop) and drift off
    # the reference's style; tokens are synthguard.functional.simple_tokenize words.
    SampleCheck(
        name="long_caption",
        score="caption_tokens",
        larger_is_worse=True,
        score_rows=lambda r: _tokens(r.caption_tokens, r.image.shape[0]),
        score_support=lambda s: _tokens(s.caption_tokens, s.image.shape[0]),
        words="caption of {v:.0f} tokens > {t:.0f} (longer than real captions get)",
        needs=frozenset({"captions"}),
        default=False,
    ),
)

#: Every per-sample check by name, in report order.
SAMPLE_CHECKS: dict[str, SampleCheck] = {check.name: check for check in _CHECKS}
