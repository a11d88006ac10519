"""The demo's ``report.html``: the loop's outcome first, then metrics per generation and arm,
what the guard did each generation, alignments against real data, the per-generation table and
the guard's last decision sample by sample. Drawn by the report's own pieces
(``synthguard/report/_charts.py``, ``_page.py``, ``_templates/demo.html.j2``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from synthguard._io import atomic_write_text
from synthguard.cli._demo._loop import ARMS
from synthguard.cli._demo._result import DemoResult
from synthguard.report._charts import (
    HistogramPanel,
    LinePanel,
    Series,
    histogram_chart,
    line_chart,
    stacked_bar_chart,
)
from synthguard.report._html import summary
from synthguard.report._page import render_page, sample_table

__all__ = ["ARM_STYLES", "write_report"]

#: Colour, marker, dash and table symbol per arm: told apart in grey-scale too.
ARM_STYLES = {
    "replace": ("#d62728", "o", "-", "●"),
    "guarded": ("#2ca02c", "s", "--", "■"),
    "accumulate": ("#1f77b4", "^", ":", "▲"),
}
_METRICS = {
    "accuracy": ("real held-out accuracy", "accuracy (share correct)"),
    "variance_ratio": ("variance ratio", "total variance / real's"),
    "vendi_ratio": ("Vendi ratio", "Vendi score / real's"),
    "coverage": ("coverage", "share of real k-NN balls hit"),
    "frechet_distance": ("Fréchet distance", "FD to real (embedding units²)"),
    "alignment_mean": ("mean image–caption cosine", "cosine(image, caption)"),
}
#: Sample table rows of the demo page (rejected first).
MAX_ROWS = 300


def _metric_chart(result: DemoResult) -> str:
    warned = [w["metric"] for rows in result.rows.values() for r in rows for w in r["warnings"]]
    keys = list(_METRICS) + sorted({m for m in warned if m not in _METRICS})
    generations = [r["generation"] for r in result.rows[ARMS[0]]]
    panels = []
    for key in keys:
        title, unit = _METRICS.get(key, (key, key))
        series = []
        marks = []
        for s, arm in enumerate(ARMS):
            colour, marker, dash, _ = ARM_STYLES[arm]
            values = [float(r["metrics"].get(key, math.nan)) for r in result.rows[arm]]
            series.append(Series(arm, values, colour, marker, dash))
            marks += [(s, g) for g, r in enumerate(result.rows[arm])
                      if any(w["metric"] == key for w in r["warnings"])]  # fmt: skip
        panels.append(LinePanel(title, unit, series, marks))
    return line_chart(
        panels, x=generations, xlabel="generation (0 = real data)", name="metrics",
        title="Metrics of each arm's training data per generation",
        mark_label="monitor warning (sustained collapse trend)",
    )  # fmt: skip


def _guard_chart(result: DemoResult) -> str | None:
    records = [(r["generation"], r["guard"]) for r in result.rows["guarded"] if "guard" in r]
    if not records:
        return None
    reasons = sorted({code for _, g in records for code in g["rejects_by_reason"]})
    stacks = {code: [float(g["rejects_by_reason"].get(code, 0)) for _, g in records]
              for code in reasons}  # fmt: skip
    if not stacks:
        stacks = {"no rejects": [0.0] * len(records)}
    return stacked_bar_chart(
        [g for g, _ in records], stacks, xlabel="generation", ylabel="samples rejected",
        marks=[i for i, (_, g) in enumerate(records) if g["batches_rejected"]],
        mark_label="batch rejected (not trained on)", name="guard",
        title="Guarded arm: per-sample rejects by reason, and rejected batches",
    )  # fmt: skip


def _alignment_chart(result: DemoResult) -> tuple[str, float]:
    generation = len(result.rows[ARMS[0]]) - 1
    real = result.alignments.get("real", [])
    panels = [
        HistogramPanel(
            title=f"{arm}, generation {generation}",
            xlabel="cosine(image, caption)",
            values=result.alignments[arm],
            label=f"{arm} ({len(result.alignments[arm])} pairs)",
            reference=real,
            reference_label=f"real training pairs ({len(real)})",
        )
        for arm in ARMS
        if arm in result.alignments
    ]
    pooled = [v for p in panels for v in (*p.values, *p.reference) if math.isfinite(v)]
    # A few misaligned outliers would squeeze every bulk into two bins: the lowest 1 % of the
    # pooled values go into the first bin (the caption says so).
    low = float(np.percentile(pooled, 1)) if pooled else 0.0
    chart = histogram_chart(
        panels, name="alignment", share_x=True, ncols=3, x_range=(low, max(pooled, default=1.0)),
        title="Image–caption alignment of the last generation against real pairs",
    )  # fmt: skip
    return chart, low


def _table(result: DemoResult) -> list[dict[str, Any]]:
    rows = []
    for g in range(len(result.rows[ARMS[0]])):
        for arm in ARMS:
            r = result.rows[arm][g]
            m = r["metrics"]
            guard = r.get("guard")
            verdict, rejects = "", ""
            if guard:
                verdict = "batch rejected" if guard["batches_rejected"] else "accepted"
                rejects = ", ".join(f"{k} {v}" for k, v in guard["rejects_by_reason"].items())
            rows.append({
                "generation": g, "arm": arm, "symbol": ARM_STYLES[arm][3],
                "colour": ARM_STYLES[arm][0], "accuracy": f"{m['accuracy']:.3f}",
                "variance_ratio": f"{m['variance_ratio']:.3f}",
                "vendi_ratio": f"{m['vendi_ratio']:.3f}", "fd": f"{m['frechet_distance']:.4f}",
                "alignment": f"{m['alignment_mean']:.3f}", "coverage": f"{m['coverage']:.3f}",
                "verdict": verdict, "rejects": rejects,
                "warnings": [w["message"] for w in r["warnings"]],
            })  # fmt: skip
    return rows


def _outcome(result: DemoResult) -> dict[str, Any]:
    lines = []
    for arm in ARMS:
        accs = [r["metrics"]["accuracy"] for r in result.rows[arm]]
        line = (f"{arm}: real held-out accuracy {accs[0]:.3f} → {accs[-1]:.3f} "
                f"({(accs[-1] - accs[0]) * 100:+.1f} points)")  # fmt: skip
        warn = result.first_warning[arm]
        if warn is not None:
            message = result.rows[arm][warn]["warnings"][0]["message"]
            line += f"; first collapse warning at generation {warn}: {message}"
        else:
            line += "; no collapse warning"
        lines.append(line)
    guard = [r["guard"] for r in result.rows["guarded"] if "guard" in r]
    batches = sum(g["batches"] for g in guard)
    rejected = sum(g["batches_rejected"] for g in guard)
    reasons: dict[str, int] = {}
    for g in guard:
        for code, count in g["rejects_by_reason"].items():
            reasons[code] = reasons.get(code, 0) + count
    why = []
    for generation, report, _ in result.checks:
        failed = [m.name for m in report.metrics.values() if m.passed is False]
        if report.verdict != "accepted":
            why.append(f"generation {generation}: {report.verdict.replace('_', ' ')} "
                       f"({', '.join(failed) or 'no sample accepted'})")  # fmt: skip
    return {
        "headline": (
            f"The guard rejected {rejected} of {batches} synthetic batches of the "
            "guarded arm (a rejected batch is not trained on)."
        ),
        "arms": lines,
        "why": why,
        "rejects": [f"{v} × {k}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])],
        "relabeled": sum(g["relabeled"] for g in guard),
        "samples": sum(g["samples"] for g in guard),
    }


def write_report(result: DemoResult, path: Path) -> None:
    """Write the demo report atomically."""
    alignment, low = _alignment_chart(result)
    charts = {"metrics": _metric_chart(result), "alignment": alignment}
    guard = _guard_chart(result)
    if guard is not None:
        charts["guard"] = guard
    last = None
    if result.checks:
        generation, report, batch = result.checks[-1]
        names = report.reference.get("label_names")
        last = {
            "generation": generation,
            "summary": summary(report),
            "table": sample_table(report.samples, batch, label_names=names, max_rows=MAX_ROWS),
        }
    page = render_page(
        "demo.html.j2", charts=charts, outcome=_outcome(result), table=_table(result),
        styles=ARM_STYLES, last=last, logs=[f"{arm}.jsonl" for arm in ARMS],
        seconds=f"{result.seconds:.0f}", low=f"{low:.3f}",
    )  # fmt: skip
    atomic_write_text(path, page)
