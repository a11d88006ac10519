"""Per-sample decisions: every registry check scores every embeddable row; the enabled ones
flag it against the plan's joint thresholds; flags become rejects, or label relabels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from synthguard._reasons import ReasonCode
from synthguard.checks import SAMPLE_CHECKS, RowsToScore, SampleCheck, Scores
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows
from synthguard.relabel import Relabel, ZeroShotPrediction
from synthguard.report import SampleDecision, report_id

__all__ = ["SampleOutcome", "decide_samples"]


@dataclass(frozen=True)
class SampleOutcome:
    """Per-sample decisions plus what the batch tests need of them."""

    decisions: tuple[SampleDecision, ...]
    # [n] bool: rejected by a check calibrated on the support, or could not be embedded (what
    # the flag-rate test counts; within-batch checks reject but are not counted)
    flagged: torch.Tensor
    n_relabeled: int
    # [n] bool: embeddable and rejected by no check but the copy checks (the rows the
    # distribution tests may use once judged again for copies: synthguard.checks.split_batch)
    eligible: torch.Tensor


@dataclass(frozen=True)
class _Scored:
    """Every check's scores over all ``n`` samples (NaN where not embeddable or undefined)."""

    scores: dict[str, torch.Tensor]  # score name -> [n]
    badness: dict[str, torch.Tensor]  # check name -> [n]
    predicted: torch.Tensor  # [n] int64 zero-shot class (-1: none)
    confidence: torch.Tensor  # [n] float64
    class_scores: torch.Tensor  # [n, C] float64 (C = 1 without labels)
    predicted_labels: bool  # the frozen model classified the rows (labels and a labeler)
    # check name -> [n] int64: the batch sample (within-batch checks) or support row the
    # score was measured against, -1 where none
    partners: dict[str, torch.Tensor]


def decide_samples(plan: GuardPlan, rows: EmbeddedRows) -> SampleOutcome:
    """Score, flag and decide every sample of ``rows`` (nothing is dropped)."""
    ref, cfg = plan.reference, plan.config
    labels = rows.labels if ref.has_labels else None
    valid = rows.valid
    scored = _score(plan, rows, labels, valid)
    # A check runs on a batch that carries what it needs (labels, captions).
    # Registry order, whatever the config's order: reasons and details read alike everywhere.
    active = [
        c for c in SAMPLE_CHECKS.values()
        if c in plan.checks and _runs(c, scored, rows, labels)
    ]  # fmt: skip
    limits = plan.badness_thresholds
    flags = {c.name: valid & (scored.badness[c.name] > limits[c.name]) for c in active}
    p_values = {
        c.score: plan.calibration.p_values(c.name, scored.badness[c.name].nan_to_num(-math.inf))
        for c in active
        if c.conformal_p
    }
    natural = {c.score: c.natural(limits[c.name]) for c in active}
    decisions: list[SampleDecision] = []
    flagged = ~valid
    eligible = valid.clone()
    copy_codes = {c.reason for c in active if c.copy_score}
    n_relabeled = 0
    for i in range(valid.numel()):
        reasons: list[ReasonCode] = []
        details: list[str] = []
        partners: dict[str, int] = {}
        if i in rows.errors:
            code, said = rows.errors[i], rows.details.get(i, "could not be embedded")
            reasons.append(code)
            # The engine's details already start with their codes; others get theirs here.
            details.append(said if said.startswith(f"{code}:") else f"{code}: {said}")
        relabels: list[Relabel] = []
        if i in rows.caption_relabels:
            relabels.append(rows.caption_relabels[i])
        new_label = None if labels is None else labels[i]
        for check in active:
            if not bool(flags[check.name][i]):
                continue
            words = check.words.format(
                v=float(scored.scores[check.score][i]), t=natural[check.score], k=ref.k,
                pred=int(scored.predicted[i]), conf=float(scored.confidence[i]),
                given=None if labels is None else labels[i],
            )  # fmt: skip
            if check.label_policy and cfg.label_policy != "reject" and labels is not None:
                record = _label_relabel(i, labels[i], scored, cfg.label_policy, words)
                relabels.append(record)
                if record.applied:
                    new_label, n_relabeled = int(scored.predicted[i]), n_relabeled + 1
                continue
            # A reject (a relabeled or kept label is not one); counted by the flag-rate test
            # unless the check compares the batch with itself.
            flagged[i] = flagged[i] or not check.within_batch
            reasons.append(check.reason)
            details.append(f"{check.reason}: {words}")
            if check.name in scored.partners and int(scored.partners[check.name][i]) >= 0:
                partners[check.name] = int(scored.partners[check.name][i])
        eligible[i] = eligible[i] and all(code in copy_codes for code in reasons)
        new_caption = None
        if i in rows.caption_relabels and rows.caption_relabels[i].applied:
            new_caption = str(rows.caption_relabels[i].new_value)
            n_relabeled += 1
        decisions.append(
            SampleDecision(
                index=i,
                id=report_id(rows.ids[i]),
                accepted=not reasons,
                reasons=tuple(reasons),
                details=tuple(details),
                scores={k: float(v[i]) for k, v in scored.scores.items()},
                thresholds=natural,
                p_values={
                    k: float(v[i]) if bool(valid[i]) else math.nan for k, v in p_values.items()
                },
                new_caption=new_caption,
                new_label=new_label,
                relabels=tuple(relabels),
                partners=partners,
                truncated=bool(rows.truncated[i]) if rows.truncated is not None else False,
            )
        )
    return SampleOutcome(
        decisions=tuple(decisions), flagged=flagged, n_relabeled=n_relabeled, eligible=eligible
    )


def _runs(
    check: SampleCheck, scored: _Scored, rows: EmbeddedRows, labels: list[int] | None
) -> bool:
    if "labels" in check.needs and (labels is None or not scored.predicted_labels):
        return False
    return "captions" not in check.needs or rows.caption_tokens is not None


def _score(
    plan: GuardPlan, rows: EmbeddedRows, labels: list[int] | None, valid: torch.Tensor
) -> _Scored:
    ref = plan.reference
    n = valid.numel()
    v_idx = torch.nonzero(valid).flatten()
    img, txt = rows.image[v_idx], rows.text[v_idx]
    given = None if labels is None else torch.tensor(labels, dtype=torch.int64)[v_idx]
    wants_labels = any("labels" in c.needs for c in plan.checks)
    labeler = ref.labeler() if labels is not None and wants_labels else None
    prediction: ZeroShotPrediction | None = None if labeler is None else labeler.predict(img)
    tokens = None if rows.caption_tokens is None else rows.caption_tokens[v_idx]
    batch = RowsToScore(img, txt, ref.support_image, ref.k, given, prediction, tokens)
    scores: dict[str, torch.Tensor] = {}
    badness: dict[str, torch.Tensor] = {}
    partners: dict[str, torch.Tensor] = {}
    for check in SAMPLE_CHECKS.values():
        part = check.score_rows(batch)
        value = torch.full((n,), math.nan, dtype=torch.float64)
        value[v_idx] = part.value.double()
        if part.partner is not None:
            partner = part.partner
            if check.within_batch:  # a row of the embeddable rows -> its sample's index
                partner = torch.where(partner >= 0, v_idx[partner.clamp_min(0)], partner)
            partners[check.name] = torch.full((n,), -1, dtype=torch.int64)
            partners[check.name][v_idx] = partner
        fires = None
        if part.fires is not None:
            fires = torch.zeros(n, dtype=torch.bool)
            fires[v_idx] = part.fires
        scores[check.score] = value
        badness[check.name] = check.badness(Scores(value, fires))
    predicted = torch.full((n,), -1, dtype=torch.int64)
    confidence = torch.full((n,), math.nan, dtype=torch.float64)
    class_scores = torch.full((n, 1), math.nan, dtype=torch.float64)
    if prediction is not None:
        predicted[v_idx], confidence[v_idx] = prediction.labels, prediction.confidence.double()
        class_scores = torch.full((n, prediction.scores.shape[1]), math.nan, dtype=torch.float64)
        class_scores[v_idx] = prediction.scores.double()
    return _Scored(
        scores, badness, predicted, confidence, class_scores, prediction is not None, partners
    )


def _label_relabel(i: int, given: int, scored: _Scored, policy: str, words: str) -> Relabel:
    pred = int(scored.predicted[i])
    applied = policy == "relabel"
    return Relabel(
        index=i,
        field="label",
        method="zero_shot",
        old_value=given,
        new_value=pred,
        old_score=float(scored.class_scores[i, given]),
        new_score=float(scored.class_scores[i, pred]),
        applied=applied,
        reason=f"{words}; " + ("relabeled" if applied else "policy 'keep' keeps the label"),
    )
