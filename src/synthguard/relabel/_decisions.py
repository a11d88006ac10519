"""The keep / relabel / reject rule: given labels and a :class:`ZeroShotPrediction` become one
:class:`LabelDecision` per sample (the predictions come from
:mod:`synthguard.relabel._zeroshot`)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from synthguard._errors import InvalidInputError
from synthguard._validation import check_float, check_labels, describe
from synthguard.relabel._common import Relabel, Score
from synthguard.relabel._zeroshot import ZeroShotPrediction

__all__ = ["LABEL_POLICIES", "LabelDecision", "LabelPolicy", "resolve_labels"]

LabelPolicy = Literal["keep", "relabel", "reject"]
#: What to do when the given label disagrees with the frozen model's prediction.
LABEL_POLICIES: tuple[LabelPolicy, ...] = ("keep", "relabel", "reject")


class LabelDecision(BaseModel):
    """What happens to one sample's label (see :func:`resolve_labels`).

    Attributes:
        index: position of the sample.
        given: the label the sample came with.
        predicted: the frozen model's label (``-1``: no prediction, the image did not embed).
        confidence: softmax probability of ``predicted`` (NaN without a prediction).
        margin: top-1 minus top-2 cosine (NaN without a prediction).
        agrees: ``predicted == given``; ``None`` without a prediction.
        action: ``"keep"``, ``"relabel"`` or ``"reject"``.
        new_label: the label the sample carries on (``None`` when rejected).
        provenance: the :class:`Relabel` record, with the cosine of the image to the given and
            to the predicted class (``applied`` is true only for ``"relabel"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    given: int
    predicted: int
    confidence: Score
    margin: Score
    agrees: bool | None
    action: LabelPolicy
    new_label: int | None
    provenance: Relabel

    @property
    def reason(self) -> str:
        """Why this action, in words."""
        return self.provenance.reason


def resolve_labels(
    given: Any,
    prediction: ZeroShotPrediction,
    policy: LabelPolicy,
    *,
    min_confidence: float = 0.0,
    min_margin: float = 0.0,
) -> list[LabelDecision]:
    """Decide, per sample, whether to keep, relabel or reject its label.

    A sample whose given label agrees with the prediction is kept. On disagreement the
    ``policy`` acts only when the frozen model is sure enough (``confidence >= min_confidence``
    and ``margin >= min_margin``); a less certain disagreement is recorded but the label kept.
    A sample without a prediction (NaN embedding) keeps its label unchecked (``agrees=None``):
    the unreadable image is its own reject reason, not a label disagreement.

    Args:
        given: ``[n]`` integer labels in ``[0, C)``.
        prediction: the labeler's prediction for the same ``n`` samples.
        policy: ``"keep"`` (never change), ``"relabel"`` (take the prediction) or ``"reject"``.
        min_confidence: least softmax probability in ``[0, 1]`` for a disagreement to act.
        min_margin: least top-1 minus top-2 cosine in ``[0, 2]`` for a disagreement to act.

    Returns:
        One :class:`LabelDecision` per sample, in order.

    Example:
        >>> import torch
        >>> from synthguard.relabel import ZeroShotPrediction
        >>> pred = ZeroShotPrediction(labels=torch.tensor([0, 1]),
        ...     confidence=torch.tensor([0.9, 0.8], dtype=torch.float64),
        ...     margin=torch.tensor([0.3, 0.2], dtype=torch.float64),
        ...     scores=torch.tensor([[0.5, 0.2], [0.1, 0.3]], dtype=torch.float64),
        ...     label_names=("cat", "dog"), logit_scale=100.0)
        >>> [d.action for d in resolve_labels([0, 0], pred, "relabel")]
        ['keep', 'relabel']
        >>> [d.new_label for d in resolve_labels([0, 0], pred, "reject")]
        [0, None]
    """
    if policy not in LABEL_POLICIES:
        raise InvalidInputError(f"policy must be one of {LABEL_POLICIES}; got {describe(policy)}")
    if not isinstance(prediction, ZeroShotPrediction):
        raise InvalidInputError(
            f"prediction must be a ZeroShotPrediction; got {type(prediction).__name__}"
        )
    min_confidence = check_float("min_confidence", min_confidence, low=0.0, high=1.0)
    min_margin = check_float("min_margin", min_margin, low=0.0, high=2.0)
    n, num_classes = prediction.scores.shape
    labels = check_labels("given", given, n, num_classes).tolist()
    decisions: list[LabelDecision] = []
    for i, g in enumerate(labels):
        p = int(prediction.labels[i])
        conf = float(prediction.confidence[i])
        marg = float(prediction.margin[i])
        row = prediction.scores[i]
        agrees: bool | None = None if p < 0 else p == g
        action: LabelPolicy = "keep"
        if p < 0:
            reason = "no prediction: the image has no finite embedding; label left unchecked"
        elif agrees:
            reason = "the frozen model agrees with the given label"
        elif policy == "keep":
            reason = f"disagrees (predicted {p}); policy 'keep' keeps the given label"
        elif conf < min_confidence or marg < min_margin:
            reason = (
                f"disagrees (predicted {p}) but not confidently (confidence {conf:.3f}, "
                f"margin {marg:.3f} vs min {min_confidence:g}, {min_margin:g}); label kept"
            )
        else:
            action = policy
            verb = "relabeled" if policy == "relabel" else "rejected"
            reason = f"disagrees (predicted {p}, confidence {conf:.3f}); {verb}"
        new_label = p if action == "relabel" else (None if action == "reject" else g)
        record = Relabel(
            index=i,
            field="label",
            method="zero_shot",
            old_value=g,
            new_value=p if p >= 0 else None,
            old_score=float(row[g]),
            new_score=float(row[p]) if p >= 0 else math.nan,
            applied=action == "relabel",
            reason=reason,
        )
        decisions.append(
            LabelDecision(
                index=i,
                given=g,
                predicted=p,
                confidence=conf,
                margin=marg,
                agrees=agrees,
                action=action,
                new_label=new_label,
                provenance=record,
            )
        )
    return decisions
