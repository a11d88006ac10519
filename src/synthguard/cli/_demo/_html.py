"""The demo's ``report.html``: metrics per generation and arm, alignment histograms, samples."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from PIL import Image

from synthguard._io import atomic_write_text
from synthguard.cli._demo._loop import ARMS
from synthguard.cli._demo._result import DemoResult, format_table, summary_lines
from synthguard.report._html import histogram_svg

__all__ = ["line_chart_svg", "write_report"]

_COLOURS = {"replace": "#d62728", "guarded": "#2ca02c", "accumulate": "#1f77b4"}
_METRICS = (
    ("accuracy", "real held-out accuracy"),
    ("variance_ratio", "variance ratio (vs real reference)"),
    ("vendi_ratio", "Vendi ratio"),
    ("coverage", "coverage"),
    ("frechet_distance", "Fréchet distance"),
    ("alignment_mean", "mean image–caption cosine"),
)


def line_chart_svg(series: dict[str, list[float]], title: str, warn: dict[str, int | None]) -> str:
    """An SVG line chart of one metric per arm over generations; ▲ marks the first warning."""
    width, height, pad = 360, 200, 34
    values = [v for ys in series.values() for v in ys if math.isfinite(v)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(ys) for ys in series.values())

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + i / max(n - 1, 1) * (width - 2 * pad)
        return x, height - pad - (v - lo) / span * (height - 2 * pad)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{html.escape(title)}'>",
        f"<text x='{width / 2}' y='14' font-size='12' text-anchor='middle'>"
        f"{html.escape(title)}</text>",
        f"<text x='4' y='{pad}' font-size='10'>{hi:.3g}</text>",
        f"<text x='4' y='{height - pad}' font-size='10'>{lo:.3g}</text>",
        f"<text x='{width / 2}' y='{height - 6}' font-size='10' text-anchor='middle'>"
        "generation</text>",
    ]
    for arm, ys in series.items():
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(ys)))
        parts.append(
            f"<polyline fill='none' stroke='{_COLOURS[arm]}' stroke-width='2' points='{points}'/>"
        )
        if warn.get(arm) is not None:
            x, y = xy(int(warn[arm]), ys[int(warn[arm])])  # type: ignore[arg-type]
            parts.append(f"<text x='{x - 5:.1f}' y='{y - 6:.1f}' font-size='12' "
                         f"fill='{_COLOURS[arm]}'>▲</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _png(pixels: Any) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((40, 40), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_report(result: DemoResult, path: Path) -> None:
    """Write the demo report atomically."""
    legend = " ".join(
        f"<span style='color:{_COLOURS[a]};font-weight:600'>■ {a}</span>" for a in ARMS
    )
    charts = "".join(
        line_chart_svg(
            {arm: [r["metrics"][key] for r in result.rows[arm]] for arm in ARMS},
            title,
            result.first_warning,
        )
        for key, title in _METRICS
    )
    histograms = "".join(
        histogram_svg(values, title=f"{name}: cos(image, caption), last generation")
        for name, values in result.alignments.items()
    )
    grid = []
    for kind in ("accepted", "rejected"):
        cells = "".join(
            f"<figure><img src='{_png(p)}' width='40' height='40' style='image-rendering:"
            f"pixelated'><figcaption>{html.escape(str(reason))}</figcaption></figure>"
            for p, reason in result.examples.get(kind, [])[:40]
        )
        grid.append(f"<h3>{kind}</h3><div class='grid'>{cells}</div>")
    table = html.escape(format_table(result))
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(result))
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>synthguard demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
.charts svg{{margin:4px;border:1px solid #eee}}.grid{{display:flex;flex-wrap:wrap}}
figure{{margin:3px;text-align:center;font-size:9px;width:64px}}pre{{font-size:12px}}</style>
</head><body><h1>synthguard demo: a self-consuming loop on real digits</h1>
<p>Each generation a generator and a captioner are fit on the previous generation's pairs; a
downstream classifier is scored on real held-out digits. {legend}; ▲ first collapse warning.</p>
<ul>{summary}</ul><div class='charts'>{charts}</div>
<h2>Alignment</h2><div class='charts'>{histograms}</div>
<h2>Guarded arm: samples the guard accepted and rejected (with the reason)</h2>{"".join(grid)}
<h2>Per generation</h2><pre>{table}</pre>
<p>Logs: {", ".join(f"{a}.jsonl" for a in ARMS)} beside this file.</p></body></html>"""
    atomic_write_text(path, page)
