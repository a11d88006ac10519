"""The batch verdict from a :class:`~synthguard._shards.BatchSummary`: tests, Holm, report.

Everything here reads the summary (the whole batch, all ranks), never a rank's own rows, so
every rank (or a Ray driver holding merged statistics) reaches the same verdict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from synthguard._calibration import (
    BATCH_TESTS,
    RESAMPLED_TESTS,
    batch_values,
    bound_at,
    duplicate_rate,
    empirical_p,
    flag_rate_test,
    holm,
)
from synthguard._shards import BatchSummary
from synthguard.concepts import ConceptDrift, concept_drift
from synthguard.functional import label_drift
from synthguard.report import GuardReport, MetricResult, SampleDecision

if TYPE_CHECKING:
    from synthguard.guard import Guard

__all__ = ["make_report"]


def make_report(
    guard: Guard,
    summary: BatchSummary,
    *,
    samples: tuple[SampleDecision, ...],
    n_relabeled: int,
    rejects_by_reason: dict[str, int],
    n_truncated: int,
) -> GuardReport:
    """The :class:`GuardReport`: this rank's ``samples`` and the batch's verdict."""
    cfg, ref = guard.config, guard.reference
    reasons: list[str] = []
    metrics: dict[str, MetricResult] = {}
    concepts: list[ConceptDrift] = []
    risk: float | None = None
    rows = 0
    if summary.n_valid == 0:
        counts = ", ".join(f"{k}={v}" for k, v in rejects_by_reason.items())
        reasons.append(f"no sample could be embedded ({counts}); nothing was checked")
        risk = 1.0
    elif not cfg.batch_tests:
        reasons.append("batch tests off (GuardConfig.batch_tests is empty)")
    else:
        metrics, risk, rows, notes, concepts = _batch_tests(guard, summary)
        reasons.extend(notes)
        reasons.extend(f"failed {m.describe()}" for m in metrics.values() if m.passed is False)
    if summary.n_valid:
        metrics.update(_informational(guard, summary))
    tests_failed = any(m.passed is False for m in metrics.values())
    if summary.n_accepted == 0 and summary.n_valid:
        reasons.append(f"no sample passed the per-sample checks ({summary.n} rejected)")
    return GuardReport(
        accepted=summary.n_accepted > 0 and not tests_failed,
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
        concepts_by_class=_conditional_concepts(guard, summary) if concepts else {},
        alpha=cfg.alpha,
        alpha_batch=cfg.alpha_batch,
        seed=cfg.seed,
        rows_tested=rows,
        world_size=summary.world_size,
        n_samples_all_ranks=summary.n,
        n_accepted_all_ranks=summary.n_accepted,
        n_repeats=summary.n_repeats,
        reference={
            "encoder_digest": None if ref.fingerprint is None else ref.fingerprint.digest,
            "pairs": ref.stats.n_pairs,
            "support": ref.n_support,
        },
    )


def _batch_tests(
    guard: Guard, summary: BatchSummary
) -> tuple[dict[str, MetricResult], float | None, int, list[str], list[ConceptDrift]]:
    """Run the configured batch tests that have enough rows; Holm over those that ran."""
    cfg, ref = guard.config, guard.reference
    rows = guard.rows_for(summary.n_accepted)
    dup_rows = summary.duplicate_image.shape[0]
    values: dict[str, float] = {}
    nulls: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    wanted = set(cfg.batch_tests)
    distribution = rows >= cfg.min_batch_size
    if not distribution:
        notes.append(
            f"distribution tests skipped: {rows} accepted rows < min_batch_size "
            f"{cfg.min_batch_size} (or half the reference support)"
        )
    if dup_rows:
        context = ref.batch_context(cfg.alpha, guard.checks, guard.rejecting)
        if distribution:
            values = batch_values(context, summary.image, summary.text)
        values["duplicate_rate"] = duplicate_rate(summary.duplicate_image, context.duplicate_cosine)
        null = ref.batch_null(
            rows if distribution else 0, duplicate_size=dup_rows, alpha=cfg.alpha,
            resamples=cfg.n_resamples, seed=cfg.seed, checks=guard.checks,
            rejecting=guard.rejecting,
        )  # fmt: skip
        nulls = {name: null[:, j] for j, name in enumerate(RESAMPLED_TESTS)}
    values["flag_rate"] = summary.n_flagged / summary.n
    ran = [name for name in BATCH_TESTS if name in wanted and name in values]
    if "flag_rate" in ran and summary.n < cfg.min_batch_size:
        ran.remove("flag_rate")
    flag_p, _, flag_median = _flag_rate(guard, summary, cfg.alpha_batch)
    p = [
        empirical_p(nulls[name], values[name], BATCH_TESTS[name]) if name != "flag_rate" else flag_p
        for name in ran
    ]
    concepts = _concept_tests(guard, summary) if distribution and dup_rows else []
    p += [drift.p_value for drift in concepts]
    levels, adjusted, rejected = holm(p, cfg.alpha_batch) if p else ([], [], [])
    metrics: dict[str, MetricResult] = {}
    for j, drift in enumerate(concepts, start=len(ran)):
        tails = f"; tail loss: {', '.join(drift.tail_loss)}" if drift.tail_loss else ""
        metrics[f"concept:{drift.group}"] = MetricResult(
            name=f"concept:{drift.group}", value=drift.js_divergence, direction="high",
            p_value=p[j], adjusted_p_value=adjusted[j], level=levels[j],
            passed=not rejected[j],
            note=f"Jensen–Shannon (bits) of the concept mix; max-z permutation test; "
            f"largest mover {drift.largest_mover} ({drift.largest_change:+.1%}){tails}",
        )  # fmt: skip

    for name in BATCH_TESTS:
        if name not in values:
            continue
        if name not in ran:
            is_flag = name == "flag_rate"
            metrics[name] = MetricResult(
                name=name, value=values[name], direction=BATCH_TESTS[name],
                null_median=flag_median if is_flag else _median(nulls.get(name)),
                p_value=flag_p if is_flag else None,
                note="informational: not in GuardConfig.batch_tests",
            )  # fmt: skip
            continue
        j = ran.index(name)
        direction = BATCH_TESTS[name]
        bound: float | None
        if name == "flag_rate":
            _, bound, median = _flag_rate(guard, summary, levels[j])
        else:
            bound = bound_at(nulls[name], levels[j], direction)
            median = float(nulls[name].median())
        metrics[name] = MetricResult(
            name=name, value=values[name], direction=direction, bound=bound,
            null_median=median, p_value=p[j], adjusted_p_value=adjusted[j],
            level=levels[j], passed=not rejected[j],
        )  # fmt: skip
    if not p:
        return metrics, None, 0, [*notes, "batch tests skipped: batch too small"], concepts
    return metrics, 1.0 - min(adjusted), rows if distribution else 0, notes, concepts


def _concept_tests(guard: Guard, summary: BatchSummary) -> list[ConceptDrift]:
    """Concept mix of the accepted rows against the accepted reference support."""
    cfg, ref = guard.config, guard.reference
    pool = ref.accepted_support(cfg.alpha, guard.checks, guard.rejecting)
    out = []
    for bank in guard.concept_banks:
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


def _conditional_concepts(
    guard: Guard, summary: BatchSummary
) -> dict[str, dict[str, ConceptDrift]]:
    """Per group and class: the attribute mix *within* the class, batch vs reference.

    Informational (not in the Holm family): classes x groups tests would dilute it. Uses the
    labels the accepted samples carry on (relabels applied).
    """
    cfg, ref = guard.config, guard.reference
    names = ref.label_names
    if names is None or not summary.concept_by_class:
        return {}
    if not bool((ref.support_labels >= 0).all()):
        return {}
    pool = ref.accepted_support(cfg.alpha, guard.checks, guard.rejecting)
    out: dict[str, dict[str, ConceptDrift]] = {}
    for bank in guard.concept_banks:
        theirs = bank.counts(ref.support_image[pool], ref.support_labels[pool], len(names))
        for group in bank.groups:
            table = summary.concept_by_class[group]
            out[group] = {
                names[c]: concept_drift(
                    table[c],
                    theirs[group][c],
                    bank.concepts(group),
                    group=group,
                    resamples=199,
                    seed=cfg.seed,
                )
                for c in range(len(names))
                if int(table[c].sum()) and int(theirs[group][c].sum())
            }
    return out


def _flag_rate(guard: Guard, summary: BatchSummary, level: float) -> tuple[float, float, float]:
    ref, cfg = guard.reference, guard.config
    support_flagged = (
        ref.n_support - ref.accepted_support(cfg.alpha, guard.checks, guard.rejecting).numel()
    )
    return flag_rate_test(summary.n_flagged, summary.n, support_flagged, ref.n_support, level)


def _informational(guard: Guard, summary: BatchSummary) -> dict[str, MetricResult]:
    ref = guard.reference
    if summary.label_counts is None or ref.stats.num_labels is None:
        return {}
    drift = label_drift(summary.label_counts, ref.stats.label_counts)
    return {
        "label_drift": MetricResult(
            name="label_drift",
            value=drift.js_divergence,
            p_value=drift.p_value,
            note="Jensen–Shannon divergence (bits) of the class mix; χ² p-value; "
            "informational (a class mix may be chosen on purpose)",
        )
    }


def _median(values: torch.Tensor | None) -> float | None:
    return None if values is None else float(values.median())
