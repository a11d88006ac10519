"""Typed, frozen results of :meth:`synthguard.Guard.check`: per sample, per metric, per batch."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from synthguard._errors import InvalidInputError
from synthguard._io import atomic_write_text
from synthguard._reasons import ReasonCode
from synthguard._validation import check_int
from synthguard.batch import PairBatch
from synthguard.concepts import ConceptDrift
from synthguard.relabel import Relabel
from synthguard.relabel._common import Score
from synthguard.report._html import is_mix_test, render_report

__all__ = ["GuardReport", "MetricResult", "SampleDecision", "Verdict"]

#: A batch's verdict. ``"accepted"``: every batch test passed. ``"excess_rejects"``: the
#: accepted samples passed every other test, but far more samples were rejected per sample
#: than real data gives (the ``flag_rate`` test failed): the generator is broken, and the gates
#: still pass on its accepted samples. ``"rejected"``: the batch is not trained on.
Verdict = Literal["accepted", "excess_rejects", "rejected"]


class SampleDecision(BaseModel):
    """The guard's decision on one sample.

    Attributes:
        index: position in the checked batch.
        id: the sample's id (``str`` or ``int``; other ids are written as their ``repr``).
        accepted: whether the sample passed every per-sample check (relabels applied). The
            batch verdict is separate: :meth:`GuardReport.apply` returns nothing from a
            rejected batch.
        reasons: reason codes of every failed check (empty when accepted).
        details: one human-readable sentence per reason, with score and threshold.
        scores: the sample's score per check (``alignment``, ``knn_distance``,
            ``reference_cosine``, ``batch_cosine``, ``given_label_probability``), NaN when
            undefined.
        thresholds: the calibrated threshold each score was compared with.
        p_values: conformal p-value of each calibrated score among the real support.
        new_caption: the replacement caption when it was re-captioned, else ``None``.
        new_label: the label the sample carries on (relabeled or given), ``None`` without one.
        relabels: provenance of every relabel considered (applied or not).
        partners: for a reject whose score compares the image with one other image, that
            image: ``near_duplicate`` -> the index of the earlier sample of this batch it is
            closest to; ``reference_copy`` -> the row of the reference support it is closest
            to (the reference keeps embeddings, not images or ids).
        truncated: the caption was longer than the text tower's context and was embedded
            truncated (keeping the end-of-text token).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    id: int | str
    accepted: bool
    reasons: tuple[ReasonCode, ...] = ()
    details: tuple[str, ...] = ()
    scores: dict[str, Score] = {}
    thresholds: dict[str, Score] = {}
    p_values: dict[str, Score] = {}
    new_caption: str | None = None
    new_label: int | None = None
    relabels: tuple[Relabel, ...] = ()
    partners: dict[str, int] = {}
    truncated: bool = False


class MetricResult(BaseModel):
    """One batch metric next to its calibrated bound and test (alibi-detect style).

    Attributes:
        name: metric name (see ``docs/guard.md``).
        value: the batch's value (NaN when it could not be computed).
        direction: ``"low"`` when small values signal risk, ``"high"`` when large ones do;
            ``None`` for an informational metric.
        bound: the value beyond which the test fails at its Holm level (strictly beyond);
            ``None`` for informational metrics or when untested.
        null_median: median of the metric over real-vs-real resamples of the same size.
        p_value: one-sided resampling p-value.
        adjusted_p_value: Holm-adjusted p-value; the test fails when ``<= alpha_batch``.
        level: the Holm level this test was tried at.
        passed: ``True``/``False`` for a test, ``None`` when informational or skipped.
        note: why a test was skipped, if it was.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: Score
    direction: Literal["low", "high"] | None = None
    bound: Score | None = None
    null_median: Score | None = None
    p_value: Score | None = None
    adjusted_p_value: Score | None = None
    level: Score | None = None
    passed: bool | None = None
    note: str = ""

    def describe(self) -> str:
        """One line: value, bound, p-values and verdict."""
        if self.passed is None:
            extra = "" if self.p_value is None else f"; p = {self.p_value:.3g}"
            return f"{self.name} = {self.value:.4g}" + (
                f" ({self.note}{extra})" if self.note else ""
            )
        side = "<" if self.direction == "low" else ">"
        verdict = "FAILED" if not self.passed else "passed"
        if self.bound is not None:
            bound = f"{side} {self.bound:.4g}"
        elif is_mix_test(self.name):  # its max-z permutation p decides; the JS value has no bound
            bound = f"its permutation p <= {_num(self.level, 3)}"
        else:
            bound = "never (too few resamples)"
        return (
            f"{self.name} = {self.value:.4g} ({verdict}: fails if {bound}; "
            f"real median {_num(self.null_median)}; p = {_num(self.p_value, 3)}, "
            f"Holm-adjusted {_num(self.adjusted_p_value, 3)})"
        )


class GuardReport(BaseModel):
    """Everything :meth:`synthguard.Guard.check` decided about one batch.

    Attributes:
        verdict: ``"accepted"``, ``"excess_rejects"`` (only the flag-rate test failed: the
            accepted samples are kept by :meth:`apply` and the gates, but the generator makes
            far more rejects than real data) or ``"rejected"`` (another batch test failed
            after Holm's correction, or no sample could be accepted).
        accepted: ``verdict == "accepted"``: the batch, and the generator behind it, passed.
        reasons: why the batch was rejected (or why batch tests were skipped), in words.
        risk_score: ``1 − min`` Holm-adjusted p-value over the batch tests, in ``[0, 1]``; the
            batch fails when ``risk_score >= 1 − alpha_batch``. ``None`` when the tests were
            skipped (batch too small).
        samples: one :class:`SampleDecision` per input sample, in order (nothing is dropped).
        metrics: batch metrics by name, tested and informational.
        n_samples / n_accepted / n_relabeled: counts; ``rejects_by_reason`` counts each reason
            (a sample can have several); ``n_truncated``: captions embedded truncated.
        alpha / alpha_batch / seed: the error rates and seed used.
        rows_tested: rows the batch metrics used (after dropping unembeddable samples and
            subsampling above ``max_batch_rows``).
        null_cached: whether the batch tests' null at ``rows_tested`` was read from the
            reference (``True``) or computed for this check (``False``; precompute it with
            ``Reference.build(batch_sizes=...)``); ``None`` when no resampled test ran.
        reference: what the batch was compared with (encoder digest, precision, pairs,
            support, class names); ``Guard.check`` embeds at this precision.
        reference_percentiles: per sample-check score (``alignment``, ``knn_distance``, ...),
            its 0th, 1st, ..., 100th percentile over the reference support, leave-one-out: what
            real samples score, the distribution the thresholds were calibrated on (the HTML
            report draws the batch's scores over it).
        concepts: per concept-bank group, the batch's concept mix against the reference's
            (:class:`~synthguard.ConceptDrift`), when the guard has concept banks.
        concepts_by_class: per group and class name, the attribute mix *within* the class
            (conditional drift; informational, not in the Holm family), when labels exist.
        world_size: ranks whose batches were checked as one (``Guard.check(sync=True)``).
        n_samples_all_ranks / n_accepted_all_ranks: the batch's counts over every rank (each
            sample once); equal to ``n_samples`` / ``n_accepted`` on one process.
        n_repeats: rows not counted in the batch tests because an earlier rank holds the same
            id (``DistributedSampler`` pads the last step with repeats).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    accepted: bool
    reasons: tuple[str, ...]
    risk_score: Score | None
    samples: tuple[SampleDecision, ...]
    metrics: dict[str, MetricResult]
    n_samples: int
    n_accepted: int
    n_relabeled: int
    n_truncated: int = 0
    rejects_by_reason: dict[str, int]
    alpha: float
    alpha_batch: float
    seed: int
    rows_tested: int
    null_cached: bool | None = None
    reference: dict[str, Any]
    reference_percentiles: dict[str, tuple[Score, ...]] = {}
    concepts: dict[str, ConceptDrift] = {}
    concepts_by_class: dict[str, dict[str, ConceptDrift]] = {}
    world_size: int = 1
    n_samples_all_ranks: int | None = None
    n_accepted_all_ranks: int | None = None
    n_repeats: int = 0

    @model_validator(mode="after")
    def _accepted_is_the_verdict(self) -> GuardReport:
        if self.accepted != (self.verdict == "accepted"):
            raise ValueError(
                f"accepted must be verdict == 'accepted'; got accepted={self.accepted} with "
                f"verdict {self.verdict!r}"
            )
        return self

    @property
    def failed_tests(self) -> list[MetricResult]:
        """The batch tests that failed."""
        return [m for m in self.metrics.values() if m.passed is False]

    def apply(self, batch: PairBatch) -> PairBatch | None:
        """The accepted samples of ``batch`` with relabels applied; ``None`` if none survive.

        Returns ``None`` when the verdict is ``"rejected"`` (a rejected batch is not trained on)
        or no sample was accepted; with ``"excess_rejects"`` the accepted samples are returned
        (they passed every per-sample check and distribution test).

        Raises:
            InvalidInputError: ``batch`` is not the batch this report is about.
        """
        self._check_batch(batch)
        keep = [s for s in self.samples if s.accepted]
        if self.verdict == "rejected" or not keep:
            return None
        return PairBatch(
            images=[batch.images[s.index] for s in keep],
            captions=[
                s.new_caption if s.new_caption is not None else batch.captions[s.index]
                for s in keep
            ],
            labels=None if batch.labels is None else [s.new_label for s in keep],
            ids=[batch.ids[s.index] for s in keep],
        )

    def _check_batch(self, batch: object) -> None:
        if not isinstance(batch, PairBatch) or len(batch) != self.n_samples:
            size = len(batch) if isinstance(batch, PairBatch) else "?"
            raise InvalidInputError(
                f"batch must be the PairBatch of {self.n_samples} samples this report checked; "
                f"got {type(batch).__name__} of length {size}"
            )
        for sample, id_ in zip(self.samples, batch.ids, strict=True):
            if sample.id != report_id(id_):
                raise InvalidInputError(
                    f"batch must be the batch this report checked; sample {sample.index} has id "
                    f"{report_id(id_)!r}, the report has {sample.id!r}"
                )

    def summary(self) -> str:
        """A few lines for logs: verdict, counts, reasons, every tested metric."""
        verdict = self.verdict.upper().replace("_", " ")
        risk = "n/a" if self.risk_score is None else f"{self.risk_score:.3f}"
        lines = [
            f"batch {verdict}: {self.n_accepted}/{self.n_samples} samples accepted, "
            f"{self.n_relabeled} relabeled, risk {risk}",
            *(f"  reason: {r}" for r in self.reasons),
        ]
        if self.world_size > 1:
            lines.insert(
                1,
                f"  all {self.world_size} ranks: {self.n_accepted_all_ranks}/"
                f"{self.n_samples_all_ranks} samples accepted ({self.n_repeats} padding "
                "repeats not counted); the counts above are this rank's",
            )
        if self.rejects_by_reason:
            counts = ", ".join(f"{k}={v}" for k, v in self.rejects_by_reason.items())
            lines.append(f"  sample rejects: {counts}")
        lines.extend(f"  {m.describe()}" for m in self.metrics.values())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (NaN becomes ``None``, infinities ``"inf"``/``"-inf"``)."""
        return _finite(self.model_dump(mode="json"))

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 2) -> str:
        """JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def to_metrics(self, prefix: str = "synthguard/") -> dict[str, float]:
        """Flat name -> number, for a logger in one line (TensorBoard, W&B, MLflow, Lightning).

        Counts, the verdict (``accepted`` and ``excess_rejects``, each 1 or 0), the risk score,
        and per batch metric its value, p-value and (tests) its pass flag; per reason code its
        count. NaN and ``None`` are left out (loggers refuse them).

        Example:
            ``writer.add_scalars("guard", report.to_metrics())`` or
            ``wandb.log(report.to_metrics())`` or ``mlflow.log_metrics(report.to_metrics())``.
        """
        out: dict[str, float | None] = {
            "accepted": float(self.accepted),
            "excess_rejects": float(self.verdict == "excess_rejects"),
            "risk_score": self.risk_score,
            "n_samples": float(self.n_samples),
            "n_accepted": float(self.n_accepted),
            "n_relabeled": float(self.n_relabeled),
            "n_truncated": float(self.n_truncated),
            "rows_tested": float(self.rows_tested),
        }
        for name, metric in self.metrics.items():
            out[f"metrics/{name}"] = metric.value
            out[f"metrics/{name}/p_value"] = metric.p_value
            if metric.passed is not None:
                out[f"metrics/{name}/passed"] = float(metric.passed)
        for code, count in self.rejects_by_reason.items():
            out[f"rejects/{code}"] = float(count)
        return {
            f"{prefix}{k}": float(v)
            for k, v in out.items()
            if v is not None and math.isfinite(float(v))
        }

    def to_pandas(self) -> Any:
        """One row per sample (scores, thresholds, p-values, reasons, relabels) as a
        ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # an optional dependency: say how to get it
            raise InvalidInputError("to_pandas needs pandas: pip install pandas") from exc
        rows = []
        for s in self.samples:
            row: dict[str, Any] = {
                "index": s.index, "id": s.id, "accepted": s.accepted,
                "reasons": ",".join(map(str, s.reasons)), "details": "; ".join(s.details),
                "new_label": s.new_label, "new_caption": s.new_caption,
                "relabeled": any(r.applied for r in s.relabels), "truncated": s.truncated,
            }  # fmt: skip
            row.update({f"score/{k}": v for k, v in s.scores.items()})
            row.update({f"threshold/{k}": v for k, v in s.thresholds.items()})
            row.update({f"p_value/{k}": v for k, v in s.p_values.items()})
            rows.append(row)
        return pd.DataFrame(rows).set_index("index") if rows else pd.DataFrame()

    def to_html(
        self, path: str | Path, batch: PairBatch | None = None, *, max_rows: int = 300
    ) -> Path:
        """Write the report as one self-contained HTML page, atomically.

        The page opens with the verdict and why, the rejects and relabels; then the batch
        tests, each per-sample score of the batch over the reference's, the concept mixes and
        a sample table (rejected first, filter by reason, search by caption). Charts, styles
        and thumbnails are inline: the file needs no network.

        Args:
            path: the file to write.
            batch: the :class:`~synthguard.PairBatch` this report checked: adds each sample's
                thumbnail, caption and given label to the table.
            max_rows: samples shown in the table (rejected first); the page says how many
                were left out (``to_json`` has them all), so a large batch stays a small page.

        Raises:
            InvalidInputError: ``batch`` is not the checked batch, or ``max_rows`` < 1.

        Example:
            ``report.to_html("report.html", batch)``; ``synthguard check --html`` does this.
        """
        max_rows = check_int("max_rows", max_rows, minimum=1)
        if batch is not None:
            self._check_batch(batch)
        target = Path(path)
        # ids and details may hold non-UTF-8 names (lone surrogates): shown escaped, not raised
        page = render_report(self, batch, max_rows=max_rows)
        atomic_write_text(target, page, errors="backslashreplace")
        return target


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def decision_columns(samples: Sequence[SampleDecision]) -> dict[str, list[Any]]:
    """Per-sample decision columns as the dataset integrations write them (Ray, Hugging Face):
    ``sg_accepted`` (the sample's decision), ``sg_reasons`` (comma-separated codes),
    ``sg_details`` (``"; "``-joined), ``sg_new_label`` (``-1``: none), ``sg_relabeled``."""
    return {
        "sg_accepted": [s.accepted for s in samples],
        "sg_reasons": [",".join(map(str, s.reasons)) for s in samples],
        "sg_details": ["; ".join(s.details) for s in samples],
        "sg_new_label": [-1 if s.new_label is None else s.new_label for s in samples],
        "sg_relabeled": [any(r.applied for r in s.relabels) for s in samples],
    }


def report_id(value: Any) -> int | str:
    """A sample id as it appears in reports (``int``/``str`` kept, anything else ``repr``)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return repr(value)
    return value


def count_reasons(samples: tuple[SampleDecision, ...]) -> dict[str, int]:
    """Reason code -> number of samples with it, in code order."""
    counts = Counter(str(r) for s in samples for r in s.reasons)
    return {str(code): counts[str(code)] for code in ReasonCode if counts[str(code)]}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/inf: NaN -> null, ±inf -> "inf"/"-inf" (pydantic reads both back).
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
