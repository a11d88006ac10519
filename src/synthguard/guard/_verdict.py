"""The batch verdict from a :class:`~synthguard.guard.BatchSummary`: tests, Holm, report.

Everything here reads the summary (the whole batch, all ranks), never a rank's own rows, so
every rank (or a Ray driver holding merged statistics) reaches the same verdict. Every test of
the registry is computed and reported with its p-value; the plan's family decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from synthguard.checks import (
    RESAMPLED_TESTS,
    BatchTest,
    TestInputs,
    batch_inputs,
    bound_at,
    empirical_p,
    holm,
)
from synthguard.concepts import ConceptDrift, concept_drift
from synthguard.functional import label_drift
from synthguard.guard._plan import PREDICTED_CLASS, GuardPlan
from synthguard.guard._summary import BatchSummary
from synthguard.report import GuardReport, MetricResult, SampleDecision, Verdict

__all__ = ["make_report"]

#: Resamples of the informational per-class concept tests (not in the Holm family).
CONDITIONAL_RESAMPLES = 199
#: The group name of the given-label mix test (reported as ``label_drift``).
_GIVEN_LABELS = "label"


def make_report(
    plan: GuardPlan,
    summary: BatchSummary,
    *,
    samples: tuple[SampleDecision, ...],
    n_relabeled: int,
    rejects_by_reason: dict[str, int],
    n_truncated: int,
) -> GuardReport:
    """The :class:`GuardReport`: this rank's ``samples`` and the batch's verdict."""
    cfg, ref = plan.config, plan.reference
    reasons: list[str] = []
    metrics: dict[str, MetricResult] = {}
    concepts: list[ConceptDrift] = []
    risk: float | None = None
    rows = 0
    null_cached: bool | None = None
    if summary.n_valid == 0:
        counts = ", ".join(f"{k}={v}" for k, v in rejects_by_reason.items())
        reasons.append(f"no sample could be embedded ({counts}); nothing was checked")
        risk = 1.0
    elif not cfg.batch_tests:
        reasons.append("batch tests off (GuardConfig.batch_tests is empty)")
    else:
        outcome = _batch_tests(plan, summary)
        metrics, risk, rows, concepts = (
            outcome.metrics,
            outcome.risk,
            outcome.rows,
            outcome.concepts,
        )
        null_cached = outcome.null_cached
        reasons.extend(outcome.notes)
        reasons.extend(f"failed {m.describe()}" for m in metrics.values() if m.passed is False)
    if summary.n_valid:
        metrics.update(_informational(plan, summary))
    failed = {name for name, m in metrics.items() if m.passed is False}
    if summary.n_accepted == 0 and summary.n_valid:
        reasons.append(f"no sample passed the per-sample checks ({summary.n} rejected)")
    verdict: Verdict = "accepted"
    if summary.n_accepted == 0 or failed - {"flag_rate"}:
        verdict = "rejected"
    elif failed:
        verdict = "excess_rejects"
        reasons.append(
            f"the {summary.n_accepted} accepted samples passed every other test and are kept; "
            "the generator makes far more per-sample rejects than real data"
        )
    return GuardReport(
        verdict=verdict,
        accepted=verdict == "accepted",
        reasons=tuple(reasons),
        risk_score=risk,
        samples=samples,
        metrics=metrics,
        n_samples=len(samples) if samples else summary.n,
        n_accepted=sum(d.accepted for d in samples) if samples else summary.n_accepted,
        n_relabeled=n_relabeled,
        n_truncated=n_truncated,
        rejects_by_reason=rejects_by_reason,
        concepts={d.group: d for d in concepts},
        concepts_by_class=_conditional_concepts(plan, summary) if concepts else {},
        alpha=cfg.alpha,
        alpha_batch=cfg.alpha_batch,
        seed=cfg.seed,
        rows_tested=rows,
        null_cached=null_cached,
        world_size=summary.world_size,
        n_samples_all_ranks=summary.n,
        n_accepted_all_ranks=summary.n_accepted,
        n_repeats=summary.n_repeats,
        reference={
            "encoder_digest": None if ref.fingerprint is None else ref.fingerprint.digest,
            # Guard.check embeds at the reference's precision (docs/encoders.md, "Precision").
            "precision": None if ref.fingerprint is None else ref.fingerprint.precision,
            "pairs": ref.stats.n_pairs,
            "support": ref.n_support,
            "label_names": None if ref.label_names is None else list(ref.label_names),
        },
        reference_percentiles=plan.score_percentiles,
    )


@dataclass
class _TestOutcome:
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    risk: float | None = None
    null_cached: bool | None = None
    rows: int = 0
    notes: list[str] = field(default_factory=list)
    concepts: list[ConceptDrift] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class _Value:
    """A test's value with its p-value and, for the exact test, its null at a level."""

    test: BatchTest
    value: float
    p: float
    median: float  # the null's median value
    null: torch.Tensor | None  # resampled null (None: exact)


def _batch_tests(plan: GuardPlan, summary: BatchSummary) -> _TestOutcome:
    """Every test that has enough rows; Holm over those in the family that ran."""
    cfg = plan.config
    rows = summary.image.shape[0]
    dup_rows = summary.duplicate_image.shape[0]
    out = _TestOutcome()
    distribution = rows >= cfg.min_batch_size
    if not distribution:
        wanted = plan.rows_for(summary.n_accepted)
        out.notes.append(
            f"distribution tests skipped: fewer than min_batch_size {cfg.min_batch_size} "
            "rows pass the copy checks among the rows a resample of the null meets"
            if wanted >= cfg.min_batch_size
            else f"distribution tests skipped: {wanted} accepted rows < "
            f"min_batch_size {cfg.min_batch_size} (or half the reference support)"
        )
    context = plan.context()
    # The batch meets the accepted support without `rows` held-out rows, drawn with its tested
    # rows (synthguard.checks.split_batch): the comparison each resample of the null makes.
    resampled = TestInputs(metrics={})
    if distribution:
        resampled = batch_inputs(
            context, summary.image, summary.text, summary.caption_tokens, summary.held_out
        )
    inputs = replace(
        resampled,
        duplicate_image=summary.duplicate_image if dup_rows else None,
        duplicate_cosine=context.duplicate_cosine,
        support_duplicates=context.support_duplicates if dup_rows else 0,
        support_size=plan.reference.n_support,
        n=summary.n,
        n_flagged=summary.n_flagged,
        support_flagged=plan.support_flagged,
    )
    null, out.null_cached = plan.null(rows) if distribution else (None, None)
    values: list[_Value] = []
    for test in plan.tests:
        if test.rows == "accepted" and null is None:
            continue
        if test.rows == "embeddable" and not dup_rows:
            continue
        value = test.value(inputs)
        if math.isnan(value):  # not available for this batch (e.g. no caption lengths)
            out.notes.append(f"{test.name} not computed: {test.summary}")
            continue
        if test.null == "resampled":
            assert null is not None
            column = null[:, RESAMPLED_TESTS.index(test.name)]
            if bool(column.isnan().all()):  # a costly opt-in test's null, computed in the family
                out.metrics[test.name] = MetricResult(
                    name=test.name, value=value, note="informational: not in "
                    "GuardConfig.batch_tests (its null is computed only when it is)",
                )  # fmt: skip
                continue
            median = float(column.median())
            values.append(
                _Value(test, value, empirical_p(column, value, test.direction), median, column)
            )
        else:
            assert test.exact_p is not None
            p_value, median = test.exact_p(inputs)
            values.append(_Value(test, value, p_value, median, None))
    # A count test joins the family only with enough samples to say anything.
    ran = [
        v for v in values
        if plan.in_family(v.test) and (v.test.rows != "counts" or summary.n >= cfg.min_batch_size)
    ]  # fmt: skip
    out.concepts = _concept_tests(plan, summary) if distribution and dup_rows else []
    mixes = [*out.concepts, *_label_mix(plan, summary)]
    p = [v.p for v in ran] + [drift.p_value for drift in mixes]
    names = [v.test.name for v in ran] + [_mix_name(drift) for drift in mixes]
    weights = [cfg.test_weight(name) for name in names]
    levels, adjusted, rejected = holm(p, cfg.alpha_batch, weights) if p else ([], [], [])
    for j, drift in enumerate(mixes, start=len(ran)):
        tails = f"; tail loss: {', '.join(drift.tail_loss)}" if drift.tail_loss else ""
        name = names[j]
        what = "given labels" if drift.group == _GIVEN_LABELS else "concept mix"
        out.metrics[name] = MetricResult(
            name=name, value=drift.js_divergence, direction="high",
            p_value=p[j], adjusted_p_value=adjusted[j], level=levels[j],
            passed=not rejected[j],
            note=f"Jensen–Shannon (bits) of the {what}; max-z permutation test; "
            f"largest mover {drift.largest_mover} ({drift.largest_change:+.1%}){tails}",
        )  # fmt: skip
    for v in values:
        name, direction = v.test.name, v.test.direction
        median = v.median
        if v not in ran:
            out.metrics[name] = MetricResult(
                name=name, value=v.value, direction=direction, null_median=median,
                p_value=v.p, note="informational: not in GuardConfig.batch_tests",
            )  # fmt: skip
            continue
        j = ran.index(v)
        if v.test.exact_bound is not None:
            bound: float | None = v.test.exact_bound(inputs, levels[j])
        else:
            assert v.null is not None
            bound = bound_at(v.null, levels[j], direction)
        out.metrics[name] = MetricResult(
            name=name, value=v.value, direction=direction, bound=bound, null_median=median,
            p_value=v.p, adjusted_p_value=adjusted[j], level=levels[j], passed=not rejected[j],
        )  # fmt: skip
    if not p:
        out.notes.append("batch tests skipped: batch too small")
        return out
    out.risk = 1.0 - min(adjusted)
    out.rows = rows if distribution else 0
    return out


def _mix_name(drift: ConceptDrift) -> str:
    return "label_drift" if drift.group == _GIVEN_LABELS else f"concept:{drift.group}"


def _concept_tests(plan: GuardPlan, summary: BatchSummary) -> list[ConceptDrift]:
    """Concept mix of the accepted rows against the accepted reference support."""
    cfg, ref = plan.config, plan.reference
    pool = plan.accepted_support
    out = []
    for bank in plan.concept_banks:
        ref_counts = bank.counts(ref.support_image[pool])
        for group in bank.groups:
            out.append(
                concept_drift(
                    summary.concept_counts[group],
                    ref_counts[group],
                    bank.concepts(group),
                    group=group,
                    resamples=cfg.n_resamples,
                    seed=cfg.seed,
                )
            )
    return out


def _label_mix(plan: GuardPlan, summary: BatchSummary) -> list[ConceptDrift]:
    """The batch's given labels against the reference's (``GuardConfig.class_mix``)."""
    ref = plan.reference
    counts, names = summary.label_counts, ref.label_names
    if not plan.config.class_mix or counts is None or names is None:
        return []
    if summary.n_valid < plan.config.min_batch_size:  # too few to say anything, as the others
        return []
    reference_counts = ref.stats.label_counts
    if reference_counts is None or float(counts.sum()) <= 0 or float(reference_counts.sum()) <= 0:
        return []
    return [
        concept_drift(
            counts,
            reference_counts,
            names,
            group=_GIVEN_LABELS,
            resamples=plan.config.n_resamples,
            seed=plan.config.seed,
        )
    ]


def _conditional_concepts(
    plan: GuardPlan, summary: BatchSummary
) -> dict[str, dict[str, ConceptDrift]]:
    """Per group and class: the attribute mix *within* the class, batch vs reference.

    Informational (not in the Holm family): classes x groups tests would dilute it. Uses the
    labels the accepted samples carry on (relabels applied).
    """
    cfg, ref = plan.config, plan.reference
    names = ref.label_names
    if names is None or not summary.concept_by_class:
        return {}
    if not bool((ref.support_labels >= 0).all()):
        return {}
    pool = plan.accepted_support
    out: dict[str, dict[str, ConceptDrift]] = {}
    for bank in plan.concept_banks:
        if PREDICTED_CLASS in bank.groups:  # the class mix itself, not an attribute of a class
            continue
        theirs = bank.counts(ref.support_image[pool], ref.support_labels[pool], len(names))
        for group in bank.groups:
            table = summary.concept_by_class[group]
            out[group] = {
                names[c]: concept_drift(
                    table[c],
                    theirs[group][c],
                    bank.concepts(group),
                    group=group,
                    resamples=CONDITIONAL_RESAMPLES,
                    seed=cfg.seed,
                )
                for c in range(len(names))
                if int(table[c].sum()) and int(theirs[group][c].sum())
            }
    return out


def _informational(plan: GuardPlan, summary: BatchSummary) -> dict[str, MetricResult]:
    ref = plan.reference
    if summary.label_counts is None or ref.stats.num_labels is None or plan.config.class_mix:
        return {}
    drift = label_drift(summary.label_counts, ref.stats.label_counts)
    return {
        "label_drift": MetricResult(
            name="label_drift",
            value=drift.js_divergence,
            p_value=drift.p_value,
            note="Jensen–Shannon divergence (bits) of the given labels; χ² p-value; "
            "informational (GuardConfig.class_mix is off)",
        )
    }
