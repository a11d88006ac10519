"""The reports' charts: matplotlib figures as inline, deterministic, self-contained SVG.

Figures are built with :class:`matplotlib.figure.Figure` directly, never ``pyplot``: no global
backend is switched and no figure registry grows in the caller's process. Every chart is drawn
inside an rc context that keeps text as SVG text (selectable, searchable, printable, read by
the browser test), turns mathtext off (a ``$`` in a caption or concept name is a dollar) and
salts the SVG's ids with the chart's name, so two renders are byte-identical and two charts on
one page share no id. Every axis has a label, every chart a legend, every threshold a line and
a legend entry.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from synthguard.concepts import ConceptDrift

__all__ = [
    "BATCH",
    "REAL",
    "HistogramPanel",
    "LinePanel",
    "Series",
    "concept_chart",
    "histogram_chart",
    "line_chart",
    "pvalue_chart",
    "stacked_bar_chart",
]

#: Colours of the batch and the real data (distinct in grey-scale too: bars vs a black step).
BATCH, REAL, FAIL = "#4c78a8", "#222222", "#c0392b"
#: Width of a chart on the page, in inches at 96 px: a 1280 px window fits it with margins.
_PAGE_WIDTH = 11.5
_BINS = 30
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "figure.dpi": 96,
}


@dataclass(frozen=True)
class Series:
    """One line of a line chart: a label, its values and a style that survives grey-scale."""

    label: str
    values: Sequence[float]
    color: str
    marker: str
    linestyle: str


@dataclass(frozen=True)
class LinePanel:
    """One metric over generations; ``marks`` are ``(series index, x index)`` warnings."""

    title: str
    ylabel: str
    series: Sequence[Series]
    marks: Sequence[tuple[int, int]] = ()


@dataclass(frozen=True)
class HistogramPanel:
    """A batch's values over the real data's distribution, with the thresholds applied to them.

    ``reference`` holds real values; ``reference_percentiles`` the 0th..100th percentiles of
    real values when only those are kept (a report's reference). ``thresholds`` are
    ``(value, legend text)``.
    """

    title: str
    xlabel: str
    values: Sequence[float]
    label: str
    reference: Sequence[float] = ()
    reference_percentiles: Sequence[float] = ()
    reference_label: str = "real data"
    thresholds: Sequence[tuple[float, str]] = field(default_factory=tuple)


@contextmanager
def _figure(width: float, height: float, name: str) -> Iterator[Figure]:
    import matplotlib  # an install dependency, imported when a page is drawn
    from matplotlib.figure import Figure

    rc: Any = {**_RC, "svg.hashsalt": name}  # matplotlib types its keys as literals
    with matplotlib.rc_context(rc):
        yield Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, name: str, title: str) -> str:
    """The figure as an inline ``<svg>``: no XML prolog or metadata, ids prefixed by ``name``."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = re.sub(r'id="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{name}-\1"', text)
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _labels(ax: Axes, i: int, xlabel: str, ylabel: str) -> None:
    # The ids let a test find each axis label in the page (tests/_browser.py).
    ax.set_xlabel(xlabel, gid=f"xlabel-{i}")
    ax.set_ylabel(ylabel, gid=f"ylabel-{i}")


def _grid(n: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def line_chart(
    panels: Sequence[LinePanel], *, x: Sequence[int], xlabel: str, name: str, title: str,
    mark_label: str = "monitor warning", ncols: int = 3,
) -> str:  # fmt: skip
    """Metrics over generations, one panel each, one legend for all (series and marks)."""
    from matplotlib.lines import Line2D

    rows, cols = _grid(len(panels), ncols)
    with _figure(_PAGE_WIDTH, 2.7 * rows + 0.5, name) as fig:
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
        for i, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
            for s in panel.series:
                ax.plot(x, s.values, color=s.color, marker=s.marker, linestyle=s.linestyle,
                        markersize=4.5, linewidth=1.6)  # fmt: skip
            ax.tick_params(labelbottom=True)  # ticks on every panel, not only the bottom row
            for k, (series, at) in enumerate(panel.marks):
                s = panel.series[series]
                ax.plot(x[at], s.values[at], marker="*", markersize=15, color=s.color,
                        markeredgecolor="black", linestyle="none", zorder=5,
                        gid=f"mark-{i}-{k}")  # fmt: skip
            ax.set_title(panel.title)
            ax.set_xticks(list(x))
            _labels(ax, i, xlabel, panel.ylabel)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles = [
            Line2D(
                [],
                [],
                color=s.color,
                marker=s.marker,
                linestyle=s.linestyle,  # type: ignore[arg-type]
                label=s.label,
            )
            for s in panels[0].series
        ]
        if any(p.marks for p in panels):
            star = Line2D([], [], marker="*", markersize=13, color="#888888",
                          markeredgecolor="black", linestyle="none", label=mark_label)  # fmt: skip
            handles.append(star)
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles)).set_gid(
            "legend"
        )
        return _svg(fig, name, title)


def _reference_shares(panel: HistogramPanel, edges: np.ndarray) -> np.ndarray | None:
    if len(panel.reference):
        real = np.asarray([v for v in panel.reference if math.isfinite(v)], dtype=np.float64)
        counts, _ = np.histogram(np.clip(real, edges[0], edges[-1]), bins=edges)
        return counts / max(real.size, 1)
    if len(panel.reference_percentiles):
        # The percentiles' piecewise-linear CDF, read at the bin edges: each bin's share of
        # real samples, to 1 % (one percentile step).
        cdf = np.interp(edges, np.asarray(panel.reference_percentiles), np.linspace(0, 1, 101))
        return np.diff(cdf)
    return None


def _edges(panels: Sequence[HistogramPanel]) -> np.ndarray:
    points = [
        v
        for p in panels
        for v in (*p.values, *p.reference, *p.reference_percentiles, *(t for t, _ in p.thresholds))
        if math.isfinite(v)
    ]
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, _BINS + 1)


def histogram_chart(
    panels: Sequence[HistogramPanel], *, name: str, title: str, share_x: bool, ncols: int = 2,
    x_range: tuple[float, float] | None = None,
) -> str:  # fmt: skip
    """Histograms of batches (bars) over real data (a black step line), thresholds dashed.

    Heights are shares of samples per bin, so a batch and a reference of different sizes
    compare; ``share_x`` puts every panel on the same bins (panels meant to be compared), over
    ``x_range`` when given (values outside it are counted in the first or last bin).
    """
    rows, cols = _grid(len(panels), ncols)
    common = None
    if share_x:
        common = _edges(panels) if x_range is None else np.linspace(*x_range, _BINS + 1)
    with _figure(_PAGE_WIDTH, 2.9 * rows, name) as fig:
        axes = fig.subplots(rows, cols, squeeze=False, sharex=share_x, sharey=share_x).ravel()
        for i, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
            edges = common if common is not None else _edges([panel])
            data = np.asarray([v for v in panel.values if math.isfinite(v)], dtype=np.float64)
            if data.size:
                weights = np.full(data.size, 100.0 / data.size)
                ax.hist(np.clip(data, edges[0], edges[-1]), bins=edges, weights=weights,
                        color=BATCH, alpha=0.75, label=panel.label)  # fmt: skip
            shares = _reference_shares(panel, edges)
            if shares is not None:
                ax.stairs(shares * 100, edges, color=REAL, linewidth=1.6,
                          label=panel.reference_label)  # fmt: skip
            for value, text in panel.thresholds:  # a legend entry even when there is no line
                if math.isfinite(value):
                    ax.axvline(value, color=FAIL, linestyle="--", linewidth=1.6, label=text)
                else:
                    ax.plot([], [], color=FAIL, linestyle="--", linewidth=1.6, label=text)
            if not share_x:  # headroom: the legend sits above the bars, not over them
                ax.set_ylim(0, ax.get_ylim()[1] * 1.6)
            ax.set_title(panel.title)
            _labels(ax, i, panel.xlabel, "share of samples (%)")
            ax.legend(loc="upper left").set_gid(f"legend-{i}")
        if share_x:
            axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.6)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        return _svg(fig, name, title)


def pvalue_chart(
    tests: Sequence[tuple[str, float, bool]], *, alpha: float, name: str, title: str
) -> str:
    """Each tested metric's Holm-adjusted p-value (log scale) against ``alpha``: a bar that
    reaches the dashed line or below failed. ``tests`` are ``(name, adjusted p, passed)``."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    height = 0.9 + 0.32 * len(tests)
    with _figure(_PAGE_WIDTH * 0.62, height, name) as fig:
        ax = fig.subplots()
        names = [t[0] for t in tests][::-1]
        shown = [t[1] if math.isfinite(t[1]) else 1.0 for t in tests][::-1]
        values = [max(v, 1e-300) for v in shown]  # a log axis has no 0
        failed = [not t[2] for t in tests][::-1]
        for row, (value, bad) in enumerate(zip(values, failed, strict=True)):
            ax.barh(row, value, color=FAIL if bad else "#9db8d3", hatch="///" if bad else None,
                    edgecolor="black", linewidth=0.5,
                    label="failed" if bad else "passed")  # fmt: skip
            ax.annotate(f"{shown[row]:.3g}", (value, row), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=8)  # fmt: skip
        ax.axvline(alpha, color=REAL, linestyle="--", linewidth=1.4,
                   label=f"α_batch = {alpha:g}: fails at or below")  # fmt: skip
        ax.set_xscale("log")
        # plain numbers: the default log labels are mathtext, which the rc context turns off
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(min(min(values), alpha) / 3, 3.0)
        ax.set_yticks(range(len(names)), names)
        ax.grid(axis="y", visible=False)
        ax.set_title(title)
        _labels(ax, 0, "Holm-adjusted p-value (log scale)", "batch test")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), loc="lower left",
                  bbox_to_anchor=(1.01, 0.0)).set_gid("legend-0")  # fmt: skip
        return _svg(fig, name, title)


def concept_chart(drift: ConceptDrift, *, name: str) -> str:
    """A concept group's shares in the reference (hatched) and the batch, values labelled."""
    n = len(drift.concepts)
    title = (f"{drift.group}: Jensen–Shannon {drift.js_divergence:.3f} bits, "
             f"p = {drift.p_value:.3g}; largest mover {drift.largest_mover}")  # fmt: skip
    with _figure(_PAGE_WIDTH * 0.62, 1.0 + 0.42 * n, name) as fig:
        ax = fig.subplots()
        rows = np.arange(n)[::-1]
        ref = np.asarray(drift.reference_share) * 100
        got = np.asarray(drift.batch_share) * 100
        bars = ax.barh(rows + 0.2, ref, height=0.4, color="#dddddd", hatch="///",
                       edgecolor=REAL, linewidth=0.5, label="reference")  # fmt: skip
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        bars = ax.barh(rows - 0.2, got, height=0.4, color=BATCH, label="batch")
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        ax.set_yticks(rows, [c[:30] for c in drift.concepts])
        ax.set_xlim(0, max(float(ref.max()), float(got.max()), 1.0) * 1.18)
        ax.grid(axis="y", visible=False)
        ax.set_title(title)
        _labels(ax, 0, "share of samples (%)", "concept")
        ax.legend(loc="lower right").set_gid("legend-0")
        return _svg(fig, name, title)


def stacked_bar_chart(
    x: Sequence[int], stacks: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
    marks: Sequence[int], mark_label: str, name: str, title: str,
) -> str:  # fmt: skip
    """Counts per ``x`` stacked by category (hatched apart), ``marks`` flagged above the bar."""
    # line hatches only: dotted ones ("..", "oo") cost ~20 KB of SVG per bar
    hatches = ("", "///", "\\\\\\", "---", "|||", "xx", "++")
    colours = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")
    with _figure(_PAGE_WIDTH * 0.62, 3.0, name) as fig:
        ax = fig.subplots()
        bottom = np.zeros(len(x))
        for k, (label, values) in enumerate(stacks.items()):
            ax.bar(x, values, bottom=bottom, label=label, color=colours[k % len(colours)],
                   hatch=hatches[k % len(hatches)], edgecolor="black", linewidth=0.4)  # fmt: skip
            bottom += np.asarray(values, dtype=np.float64)
        if marks:
            top = max(float(bottom.max()), 1.0)
            ax.plot([x[i] for i in marks], [bottom[i] + 0.06 * top for i in marks], marker="v",
                    color=FAIL, markeredgecolor="black", markersize=9, linestyle="none",
                    label=mark_label)  # fmt: skip
            ax.set_ylim(0, top * 1.2)
        ax.set_xticks(list(x))
        ax.set_title(title)
        _labels(ax, 0, xlabel, ylabel)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0)).set_gid("legend-0")
        return _svg(fig, name, title)
