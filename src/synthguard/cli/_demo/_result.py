"""What the demo measured, and the table and sentences the CLI and the HTML report print.

``_run`` builds the result and ``_html`` renders it; both import this module and ``_html``
never imports ``_run``, so the two have no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthguard.batch import PairBatch
from synthguard.cli._demo._loop import ARMS
from synthguard.report import GuardReport

__all__ = ["DemoResult", "format_table", "summary_lines"]


@dataclass
class DemoResult:
    """What the demo measured, per arm and generation (also in the JSONL logs)."""

    rows: dict[str, list[dict[str, Any]]]  # arm -> one record per generation
    first_warning: dict[str, int | None]  # arm -> first generation with a collapse warning
    out: Path
    seconds: float
    alignments: dict[str, list[float]] = field(default_factory=dict)  # arm -> last generation
    # the guarded arm's checks: (generation, report, the batch it checked)
    checks: list[tuple[int, GuardReport, PairBatch]] = field(default_factory=list)


def format_table(result: DemoResult) -> str:
    """The per-generation table printed by the CLI (Markdown)."""
    head = ("| gen | arm | real-test acc | variance ratio | Vendi ratio | FD | alignment | "
            "coverage | rejects (guard) |")  # fmt: skip
    lines = [head, "|" + "---|" * 9]
    generations = len(next(iter(result.rows.values())))
    for g in range(generations):
        for arm in ARMS:
            r = result.rows[arm][g]
            m = r["metrics"]
            guard = r.get("guard", {}).get("rejects_by_reason", {})
            rejects = ", ".join(f"{k} {v}" for k, v in guard.items()) or "—"
            if r.get("guard", {}).get("batches_rejected"):
                rejects += f"; {r['guard']['batches_rejected']} batches"
            warn = " ⚠" if r["warnings"] else ""
            lines.append(
                f"| {g} | {arm}{warn} | {m['accuracy']:.3f} | {m['variance_ratio']:.3f} | "
                f"{m['vendi_ratio']:.3f} | {m['frechet_distance']:.4f} | "
                f"{m['alignment_mean']:.3f} | {m['coverage']:.3f} | {rejects} |"
            )
    return "\n".join(lines)


def summary_lines(result: DemoResult) -> list[str]:
    """The claims the demo checks, in words, with the measured numbers."""
    out = []
    for arm in ARMS:
        accs = [r["metrics"]["accuracy"] for r in result.rows[arm]]
        warn = result.first_warning[arm]
        change = (accs[-1] - accs[0]) * 100
        line = f"{arm:>10}: accuracy {accs[0]:.3f} -> {accs[-1]:.3f} ({change:+.1f} points)"
        if warn is not None:
            message = result.rows[arm][warn]["warnings"][0]["message"]
            line += (f"; first warning at generation {warn} (accuracy then "
                     f"{(accs[warn] - accs[0]) * 100:+.1f} points): {message}")  # fmt: skip
        out.append(line)
    return out
