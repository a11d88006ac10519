"""Per-sample checks: scores, calibrated flags, reasons and label relabels for one batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from synthguard._calibration import kth_distance, max_cosine
from synthguard._reasons import ReasonCode
from synthguard.reference import Reference
from synthguard.relabel import Relabel
from synthguard.report import SampleDecision, report_id

__all__ = ["SampleOutcome", "check_samples"]

# score name, check it feeds, sign turning the score into badness (larger is worse)
_SCORES = {
    "alignment": ("low_alignment", -1.0),
    "knn_distance": ("off_manifold", 1.0),
    "reference_cosine": ("reference_copy", 1.0),
    "batch_cosine": ("reference_copy", 1.0),  # near duplicates share the copy threshold
    "given_label_probability": ("label_mismatch", -1.0),
}
_REASON = {
    "alignment": ReasonCode.LOW_ALIGNMENT,
    "knn_distance": ReasonCode.OFF_MANIFOLD,
    "reference_cosine": ReasonCode.REFERENCE_COPY,
    "batch_cosine": ReasonCode.NEAR_DUPLICATE,
    "given_label_probability": ReasonCode.LABEL_MISMATCH,
}
_WORDS = {
    "alignment": "image–caption cosine {v:.4f} < {t:.4f}",
    "knn_distance": "distance to the {k}-th nearest real image {v:.4f} > {t:.4f}",
    "reference_cosine": "cosine to the nearest real image {v:.5f} > {t:.5f}",
    "batch_cosine": "cosine to an earlier image of the batch {v:.5f} > {t:.5f}",
    "given_label_probability": (
        "frozen model predicts {pred} (P = {conf:.3f}); P(given label {given}) = {v:.3g} < {t:.3g}"
    ),
}


@dataclass
class SampleOutcome:
    """Per-sample results plus what the batch tests need."""

    decisions: list[SampleDecision]
    flagged: torch.Tensor  # [n] bool: rejected by a check or could not be embedded
    n_relabeled: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def check_samples(
    ref: Reference,
    image: torch.Tensor,
    text: torch.Tensor,
    *,
    labels: list[int] | None,
    ids: list[Any],
    errors: dict[int, ReasonCode],
    error_details: dict[int, str],
    checks: tuple[str, ...],
    alpha: float,
    label_policy: str,
    caption_relabels: dict[int, Relabel],
    truncated: torch.Tensor | None = None,
) -> SampleOutcome:
    """Score every embeddable sample, flag it against the calibrated thresholds, decide."""
    n = image.shape[0]
    valid = torch.ones(n, dtype=torch.bool)
    valid[list(errors)] = False
    v_idx = torch.nonzero(valid).flatten()
    img, txt = image[v_idx], text[v_idx]
    scores = {name: torch.full((n,), math.nan, dtype=torch.float64) for name in _SCORES}
    scores["alignment"][v_idx] = (img * txt).sum(dim=1)
    scores["knn_distance"][v_idx] = kth_distance(img, ref.support_image, ref.k)
    scores["reference_cosine"][v_idx] = max_cosine(img, ref.support_image)
    scores["batch_cosine"][v_idx] = max_cosine(img, exclude="later")
    labeler = ref.labeler() if labels is not None and "label_mismatch" in checks else None
    predicted = torch.full((n,), -1, dtype=torch.int64)
    confidence = torch.full((n,), math.nan, dtype=torch.float64)
    class_scores = torch.full((n, 1), math.nan, dtype=torch.float64)
    if labeler is not None and labels is not None:
        pred = labeler.predict(img)
        predicted[v_idx], confidence[v_idx] = pred.labels, pred.confidence
        given = torch.tensor(labels, dtype=torch.int64)[v_idx]
        scores["given_label_probability"][v_idx] = pred.probabilities.gather(1, given[:, None])[
            :, 0
        ]
        class_scores = torch.full((n, pred.scores.shape[1]), math.nan, dtype=torch.float64)
        class_scores[v_idx] = pred.scores
    active = [s for s, (check, _) in _SCORES.items() if check in checks]
    if labeler is None and "given_label_probability" in active:
        active.remove("given_label_probability")
    calibration = ref.sample_calibration(checks)
    limits = calibration.thresholds(alpha)
    disagree = (predicted >= 0) & (
        predicted != torch.tensor(labels if labels is not None else [-1] * n)
    )
    flags: dict[str, torch.Tensor] = {}
    p_values: dict[str, torch.Tensor] = {}
    for name in active:
        check, sign = _SCORES[name]
        badness = sign * scores[name]
        if name == "given_label_probability":
            badness = torch.where(disagree, badness, torch.full_like(badness, -math.inf))
        flags[name] = valid & (badness > limits[check])  # NaN compares False
        if name != "batch_cosine":
            p_values[name] = calibration.p_values(check, badness.nan_to_num(-math.inf))
    natural = {name: _SCORES[name][1] * limits[_SCORES[name][0]] for name in active}
    decisions: list[SampleDecision] = []
    flagged = ~valid
    n_relabeled = 0
    for i in range(n):
        reasons: list[ReasonCode] = []
        details: list[str] = []
        if i in errors:
            reasons.append(errors[i])
            details.append(f"{errors[i]}: {error_details.get(i, 'could not be embedded')}")
        relabels: list[Relabel] = []
        if i in caption_relabels:
            relabels.append(caption_relabels[i])
        new_label = None if labels is None else labels[i]
        for name in active:
            if not bool(flags[name][i]):
                continue
            words = _WORDS[name].format(
                v=float(scores[name][i]), t=natural[name], k=ref.k,
                pred=int(predicted[i]), conf=float(confidence[i]),
                given=None if labels is None else labels[i],
            )  # fmt: skip
            if name == "given_label_probability" and label_policy != "reject":
                record = _label_relabel(i, labels, predicted, class_scores, label_policy, words)
                relabels.append(record)
                if record.applied:
                    new_label, n_relabeled = int(predicted[i]), n_relabeled + 1
                continue
            flagged[i] = True  # a reject (a relabeled or kept label is not one)
            reasons.append(_REASON[name])
            details.append(f"{_REASON[name]}: {words}")
        new_caption = None
        if i in caption_relabels and caption_relabels[i].applied:
            new_caption = str(caption_relabels[i].new_value)
            n_relabeled += 1
        decisions.append(
            SampleDecision(
                index=i,
                id=report_id(ids[i]),
                accepted=not reasons,
                reasons=tuple(reasons),
                details=tuple(details),
                scores={k: float(v[i]) for k, v in scores.items()},
                thresholds=natural,
                p_values={
                    k: float(v[i]) if bool(valid[i]) else math.nan for k, v in p_values.items()
                },
                new_caption=new_caption,
                new_label=new_label,
                relabels=tuple(relabels),
                truncated=bool(truncated[i]) if truncated is not None else False,
            )
        )
    return SampleOutcome(decisions=decisions, flagged=flagged, n_relabeled=n_relabeled)


def _label_relabel(
    i: int,
    labels: list[int] | None,
    predicted: torch.Tensor,
    class_scores: torch.Tensor,
    policy: str,
    words: str,
) -> Relabel:
    assert labels is not None  # only called for labelled batches
    given, pred = labels[i], int(predicted[i])
    applied = policy == "relabel"
    return Relabel(
        index=i,
        field="label",
        method="zero_shot",
        old_value=given,
        new_value=pred,
        old_score=float(class_scores[i, given]),
        new_score=float(class_scores[i, pred]),
        applied=applied,
        reason=f"{words}; " + ("relabeled" if applied else "policy 'keep' keeps the label"),
    )
