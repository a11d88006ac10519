"""The ``synthguard check --html`` page of a :class:`~synthguard.GuardReport` (``to_html``).

Summary first (verdict, why, rejects, relabels), then the batch tests, the per-sample scores
over the reference's, the concept mixes and the sample table (``report/_page.py``,
``report/_charts.py``, ``report/_templates/check.html.j2``). The report model imports this
module, so the page reads the report through the protocols below, never ``_model`` itself.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from synthguard._reasons import ReasonCode
from synthguard.batch import PairBatch
from synthguard.checks import BATCH_TESTS, SAMPLE_CHECKS
from synthguard.report._charts import (
    HistogramPanel,
    concept_chart,
    histogram_chart,
    pvalue_chart,
)
from synthguard.report._page import SampleLike, label_text, render_page, sample_table

if TYPE_CHECKING:
    from synthguard.concepts import ConceptDrift

__all__ = ["ReportLike", "is_mix_test", "render_report", "summary"]

#: Axis label of each per-sample score.
SCORE_AXES = {
    "alignment": "cosine(image, caption)",
    "knn_distance": "distance to the k-th nearest real image",
    "reference_cosine": "cosine to the nearest real image",
    "batch_cosine": "cosine to the nearest earlier image of the batch",
    "given_label_probability": "P(given label) by the frozen model",
    "caption_tokens": "caption tokens",
}
VERDICT_WORDS = {
    "accepted": "ACCEPTED: every batch test passed; the accepted samples can be trained on.",
    "excess_rejects": (
        "EXCESS REJECTS: the accepted samples passed every distribution test and are kept, but "
        "the generator makes far more per-sample rejects than real data."
    ),
    "rejected": "REJECTED: do not train on this batch.",
}


#: Kinds of label change the summary lists one by one.
_RELABEL_LINES = 5


def is_mix_test(name: str) -> bool:
    """Whether ``name`` is a label or concept mix test (decided by a permutation p-value of a
    max-z statistic, reported with its Jensen–Shannon divergence, which has no bound)."""
    return name == "label_drift" or name.startswith("concept:")


class _MetricLike(Protocol):
    """What the page reads of a :class:`~synthguard.MetricResult`."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def direction(self) -> str | None: ...
    @property
    def bound(self) -> float | None: ...
    @property
    def null_median(self) -> float | None: ...
    @property
    def level(self) -> float | None: ...
    @property
    def p_value(self) -> float | None: ...
    @property
    def adjusted_p_value(self) -> float | None: ...
    @property
    def passed(self) -> bool | None: ...
    @property
    def note(self) -> str: ...


class _SampleLike(SampleLike, Protocol):
    @property
    def thresholds(self) -> Mapping[str, float]: ...


class ReportLike(Protocol):
    """What :func:`render_report` reads of a :class:`~synthguard.GuardReport`."""

    @property
    def verdict(self) -> str: ...
    @property
    def reasons(self) -> Sequence[str]: ...
    @property
    def risk_score(self) -> float | None: ...
    @property
    def samples(self) -> Sequence[_SampleLike]: ...
    @property
    def metrics(self) -> Mapping[str, _MetricLike]: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def n_accepted(self) -> int: ...
    @property
    def n_relabeled(self) -> int: ...
    @property
    def rejects_by_reason(self) -> Mapping[str, int]: ...
    @property
    def alpha(self) -> float: ...
    @property
    def alpha_batch(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def rows_tested(self) -> int: ...
    @property
    def reference(self) -> Mapping[str, Any]: ...
    @property
    def reference_percentiles(self) -> Mapping[str, Sequence[float]]: ...
    @property
    def concepts(self) -> Mapping[str, ConceptDrift]: ...


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _what(name: str) -> str:
    """What a metric measures, in words."""
    if name in BATCH_TESTS:
        return BATCH_TESTS[name].summary
    if name.startswith("concept:"):
        return f"the mix of the concept group {name[8:]!r} against the reference's"
    if name == "label_drift":
        return "the mix of the given class labels against the reference's"
    return ""


def _failed_words(m: _MetricLike, alpha_batch: float) -> str:
    what = f" ({_what(m.name)})" if _what(m.name) else ""
    side = "below" if m.direction == "low" else "above"
    rule = (f"fails when its permutation p ≤ {_num(m.level, 3)}" if is_mix_test(m.name)
            else f"fails {side} {_num(m.bound)}")  # fmt: skip
    return (f"{m.name}{what} = {_num(m.value)}: {rule} (real data's "
            f"median {_num(m.null_median)}); p = {_num(m.p_value, 3)}, Holm-adjusted "
            f"{_num(m.adjusted_p_value, 3)} ≤ α_batch {alpha_batch:g}")  # fmt: skip


def summary(report: ReportLike) -> dict[str, Any]:
    """What a reviewer reads first: the verdict, why in words, the rejects, the relabels."""
    names = report.reference.get("label_names")
    failed = [m for m in report.metrics.values() if m.passed is False]
    notes = [r for r in report.reasons if not r.startswith("failed ")]
    rejected = report.n_samples - report.n_accepted
    rejects = [
        f"{count} × {code}: {_reason_words(code)}"
        for code, count in report.rejects_by_reason.items()
    ]
    changes: Counter[str] = Counter()
    captions = 0
    for s in report.samples:
        for r in s.relabels:
            if r.applied and r.field == "label":
                changes[f"{label_text(r.old_value, names)} → {label_text(r.new_value, names)}"] += 1
            captions += r.applied and r.field == "caption"
    relabels = [f"{n} × label {change}" for change, n in changes.most_common(_RELABEL_LINES)]
    if len(changes) > _RELABEL_LINES:
        rest = sum(n for _, n in changes.most_common()[_RELABEL_LINES:])
        relabels.append(f"{rest} × other label changes (the table lists every one)")
    if captions:
        relabels.append(f"{captions} × caption replaced by a re-captioned one")
    return {
        "verdict": report.verdict,
        "headline": VERDICT_WORDS.get(report.verdict, report.verdict),
        "why": [_failed_words(m, report.alpha_batch) for m in failed] + notes,
        "counts": (
            f"{report.n_accepted} of {report.n_samples} samples accepted, {rejected} "
            f"rejected, {report.n_relabeled} relabeled"
        ),
        "rejects": rejects,
        "relabels": relabels,
    }


def _reason_words(code: str) -> str:
    try:
        return ReasonCode(code).words
    except (ValueError, KeyError):  # a code from a newer report: the code is the words
        return code


def _metric_rows(report: ReportLike) -> list[dict[str, str]]:
    """Failed tests first, then passed ones, then informational metrics."""
    rows = []
    order = {False: 0, True: 1, None: 2}
    for m in sorted(report.metrics.values(), key=lambda m: order[m.passed]):
        result = "pass" if m.passed else "FAIL"
        if m.passed is None:
            result = m.note or "informational"
        side = {"low": "below ", "high": "above "}.get(m.direction or "", "")
        rows.append({
            "name": m.name, "what": _what(m.name),
            "value": _num(m.value), "bound": f"{side}{_num(m.bound)}" if m.bound is not None
            else "—", "median": _num(m.null_median), "p": _num(m.p_value, 3),
            "holm": _num(m.adjusted_p_value, 3), "result": result,
        })  # fmt: skip
    return rows


def _score_panels(report: ReportLike) -> list[HistogramPanel]:
    thresholds = next((s.thresholds for s in report.samples if s.thresholds), {})
    panels = []
    for check in SAMPLE_CHECKS.values():
        score = check.score
        if score not in thresholds:
            continue
        values = [s.scores.get(score, math.nan) for s in report.samples]
        finite = [v for v in values if math.isfinite(v)]
        percentiles = report.reference_percentiles.get(score, ())
        limit = thresholds[score]
        # a score the reference has no distribution of and no finite threshold for (the label
        # check flags every disagreement) says nothing as a histogram: the table has it
        if not finite or (not percentiles and not math.isfinite(limit)):
            continue
        side = "above" if check.larger_is_worse else "below"
        words = (f"threshold {limit:.4g}: reject {side}" if math.isfinite(limit)
                 else "no finite threshold: never rejects")  # fmt: skip
        panels.append(
            HistogramPanel(
                title=f"{check.name}: {score}",
                xlabel=SCORE_AXES.get(score, score),
                values=finite,
                label=f"this batch ({len(finite)} samples)",
                reference_percentiles=percentiles,
                reference_label="real data (reference, leave-one-out)",
                thresholds=((limit, words),),
            )
        )
    return panels


def render_report(
    report: ReportLike, batch: PairBatch | None = None, *, max_rows: int = 300
) -> str:
    """The report as one self-contained HTML page (``batch`` adds thumbnails and captions)."""
    charts: dict[str, str] = {}
    tested = [m for m in report.metrics.values() if m.passed is not None]
    if tested:
        charts["tests"] = pvalue_chart(
            [(m.name, m.adjusted_p_value or math.nan, bool(m.passed)) for m in tested],
            alpha=report.alpha_batch, name="tests", title="Batch tests: Holm-adjusted p-values",
        )  # fmt: skip
    panels = _score_panels(report)
    if panels:
        charts["scores"] = histogram_chart(
            panels, name="scores", share_x=False,
            title="Per-sample scores: this batch over real data, with the thresholds",
        )  # fmt: skip
    concepts = []
    for i, drift in enumerate(report.concepts.values()):
        concepts.append(f"concept-{i}")
        charts[f"concept-{i}"] = concept_chart(drift, name=f"concept-{i}")
    table = sample_table(
        report.samples, batch, label_names=report.reference.get("label_names"),
        max_rows=max_rows,
    )  # fmt: skip
    return render_page(
        "check.html.j2",
        charts=charts,
        concepts=concepts,
        summary=summary(report),
        metrics=_metric_rows(report),
        table=table,
        settings={
            "α (per-sample false-reject rate)": f"{report.alpha:g}",
            "α_batch (family-wise level)": f"{report.alpha_batch:g}",
            "seed": str(report.seed),
            "rows in the batch tests": str(report.rows_tested),
            "risk score": _num(report.risk_score, 3),
            "reference pairs / support": (
                f"{report.reference.get('pairs')} / {report.reference.get('support')}"
            ),
            "encoder digest": str(report.reference.get("encoder_digest") or "—")[:16],
        },
    )
