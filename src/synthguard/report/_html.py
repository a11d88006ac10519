"""Self-contained HTML for a :class:`~synthguard.GuardReport`: tables and inline SVG, no CDN.

The report model imports this module, so the page is typed against the small protocols below
(the attributes it reads) rather than the model itself: no import goes back to ``_model``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from synthguard.concepts import ConceptDrift

__all__ = ["ReportLike", "bars_svg", "histogram_svg", "render_report"]


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
    def p_value(self) -> float | None: ...
    @property
    def adjusted_p_value(self) -> float | None: ...
    @property
    def passed(self) -> bool | None: ...
    @property
    def note(self) -> str: ...


class _SampleLike(Protocol):
    """What the page reads of a :class:`~synthguard.SampleDecision`."""

    @property
    def index(self) -> int: ...
    @property
    def id(self) -> int | str: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def details(self) -> Sequence[str]: ...
    @property
    def scores(self) -> Mapping[str, float]: ...
    @property
    def thresholds(self) -> Mapping[str, float]: ...
    @property
    def new_caption(self) -> str | None: ...
    @property
    def new_label(self) -> int | None: ...


class ReportLike(Protocol):
    """What :func:`render_report` reads of a :class:`~synthguard.GuardReport`."""

    @property
    def accepted(self) -> bool: ...
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
    def concepts(self) -> Mapping[str, ConceptDrift]: ...


_MAX_ROWS = 1000
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:13px}th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}
.ok{color:#1b7f3b;font-weight:600}.muted{color:#777}
"""


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def histogram_svg(
    values: list[float], *, threshold: float | None = None, bins: int = 30, title: str = ""
) -> str:
    """A small SVG histogram of finite ``values`` with an optional threshold line."""
    data = [v for v in values if math.isfinite(v)]
    width, height, pad = 420, 160, 24
    if not data:
        return f"<p class='muted'>{html.escape(title)}: no finite values</p>"
    lo, hi = min(data), max(data)
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    span = (hi - lo) or 1.0
    counts = [0] * bins
    for v in data:
        counts[min(int((v - lo) / span * bins), bins - 1)] += 1
    top = max(counts)
    bar_w = (width - 2 * pad) / bins
    bars = "".join(
        f"<rect x='{pad + i * bar_w:.1f}' y='{height - pad - c / top * (height - 2 * pad):.1f}' "
        f"width='{bar_w - 1:.1f}' height='{c / top * (height - 2 * pad):.1f}' fill='#4c78a8'/>"
        for i, c in enumerate(counts)
    )
    line = ""
    if threshold is not None and math.isfinite(threshold):
        x = pad + (threshold - lo) / span * (width - 2 * pad)
        line = (
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{pad / 2}' y2='{height - pad}' "
            f"stroke='#b00020' stroke-dasharray='4 3'/>"
            f"<text x='{x + 3:.1f}' y='{pad}' font-size='11' fill='#b00020'>"
            f"threshold {threshold:.4g}</text>"
        )
    axis = (
        f"<text x='{pad}' y='{height - 6}' font-size='11'>{lo:.3g}</text>"
        f"<text x='{width - pad}' y='{height - 6}' font-size='11' text-anchor='end'>{hi:.3g}</text>"
        f"<text x='{width / 2}' y='12' font-size='12' text-anchor='middle'>"
        f"{html.escape(title)}</text>"
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"role='img' aria-label='{html.escape(title)}'>{bars}{line}{axis}</svg>"
    )


def bars_svg(drift: ConceptDrift) -> str:
    """Paired bars per concept: reference share (grey) and batch share (blue)."""
    width, row = 460, 16
    height = row * len(drift.concepts) + 30
    top = max(*drift.reference_share, *drift.batch_share) or 1.0
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='concept mix {html.escape(drift.group)}'>",
        f"<text x='4' y='12' font-size='12'>{html.escape(drift.group)}: JS "
        f"{drift.js_divergence:.3f} bits, p = {drift.p_value:.3g}, largest mover "
        f"{html.escape(drift.largest_mover)}</text>",
    ]
    for i, (name, ref, got) in enumerate(
        zip(drift.concepts, drift.reference_share, drift.batch_share, strict=True)
    ):
        y = 22 + i * row
        scale = (width - 140) / top
        parts.append(
            f"<text x='4' y='{y + 10}' font-size='10'>{html.escape(name[:18])}</text>"
            f"<rect x='120' y='{y}' width='{ref * scale:.1f}' height='6' fill='#999'/>"
            f"<rect x='120' y='{y + 6}' width='{got * scale:.1f}' height='6' fill='#4c78a8'/>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_report(report: ReportLike) -> str:
    """The report as one HTML page."""
    verdict = report.verdict.upper().replace("_", " ")
    cls = "ok" if report.accepted else "bad"
    risk = "n/a" if report.risk_score is None else f"{report.risk_score:.3f}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>synthguard report</title>",
        f"<style>{_STYLE}</style></head><body><h1>synthguard report</h1>",
        f"<p>Batch <span class='{cls}'>{verdict}</span>: {report.n_accepted} of "
        f"{report.n_samples} samples accepted, {report.n_relabeled} relabeled; risk {risk} "
        f"(α = {report.alpha:g} per sample, α<sub>batch</sub> = {report.alpha_batch:g}, "
        f"seed {report.seed}).</p>",
    ]
    if report.reasons:
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in report.reasons))
        parts.append("</ul>")
    parts.append("<h2>Batch metrics</h2><table><tr><th>metric</th><th>value</th><th>bound</th>")
    parts.append("<th>real median</th><th>p</th><th>Holm p</th><th>result</th></tr>")
    for m in report.metrics.values():
        if m.passed is None:
            result = html.escape(m.note) or "info"
        else:
            result = "<span class='ok'>pass</span>" if m.passed else "<span class='bad'>FAIL</span>"
        side = "" if m.direction is None else ("&lt; " if m.direction == "low" else "&gt; ")
        parts.append(
            f"<tr><td>{html.escape(m.name)}</td><td>{_fmt(m.value)}</td>"
            f"<td>{side if m.bound is not None else ''}{_fmt(m.bound)}</td>"
            f"<td>{_fmt(m.null_median)}</td><td>{_fmt(m.p_value)}</td>"
            f"<td>{_fmt(m.adjusted_p_value)}</td>"
            f"<td>{result}</td></tr>"
        )
    parts.append("</table>")
    if report.rejects_by_reason:
        parts.append("<h2>Sample rejects by reason</h2><table>")
        parts.extend(
            f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
            for k, v in report.rejects_by_reason.items()
        )
        parts.append("</table>")
    if report.concepts:
        parts.append("<h2>Concept mix: reference vs batch</h2>")
        parts.extend(bars_svg(d) for d in report.concepts.values())
    alignment = [s.scores.get("alignment", math.nan) for s in report.samples]
    thr = next((s.thresholds.get("alignment") for s in report.samples if s.thresholds), None)
    parts.append("<h2>Image–caption alignment</h2>")
    parts.append(histogram_svg(alignment, threshold=thr, title="cosine(image, caption)"))
    parts.append("<h2>Samples</h2><table><tr><th>#</th><th>id</th><th>accepted</th>")
    parts.append("<th>reasons</th><th>alignment</th><th>new label</th><th>new caption</th></tr>")
    for s in report.samples[:_MAX_ROWS]:
        parts.append(
            f"<tr><td>{s.index}</td><td>{_fmt(s.id)}</td>"
            f"<td class='{'ok' if s.accepted else 'bad'}'>{'yes' if s.accepted else 'no'}</td>"
            f"<td>{html.escape('; '.join(s.details))}</td>"
            f"<td>{_fmt(s.scores.get('alignment'))}</td><td>{_fmt(s.new_label)}</td>"
            f"<td>{_fmt(s.new_caption)}</td></tr>"
        )
    parts.append("</table>")
    if report.n_samples > _MAX_ROWS:
        parts.append(
            f"<p class='muted'>first {_MAX_ROWS} of {report.n_samples} samples shown; "
            "the JSON report has all.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
