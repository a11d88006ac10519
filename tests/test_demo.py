"""The demo's claims, measured on its default run (the numbers the README states), and its page
read in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _browser import assert_readable, open_page, visible_rows
from synthguard.cli._demo._result import DemoResult
from synthguard.cli._demo._run import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    return run_demo(10, seed=0, out=tmp_path_factory.mktemp("demo"), progress=False)


@pytest.mark.slow
def test_the_demo_shows_collapse_and_the_guard_catching_it(demo: DemoResult) -> None:
    result = demo
    acc = {arm: [r["metrics"]["accuracy"] for r in rows] for arm, rows in result.rows.items()}
    drop = {arm: values[0] - values[-1] for arm, values in acc.items()}
    # The unguarded loop degrades on real held-out data, and its diversity falls.
    replace = result.rows["replace"]
    assert drop["replace"] >= 0.05, drop
    assert replace[-1]["metrics"]["variance_ratio"] < 0.95 * replace[0]["metrics"]["variance_ratio"]
    assert replace[-1]["metrics"]["coverage"] < 0.9 * replace[0]["metrics"]["coverage"]
    # Guarded degrades clearly less; accumulating real data does not degrade.
    assert drop["guarded"] <= drop["replace"] - 0.02, drop
    assert drop["accumulate"] <= 0.01, drop
    # The monitor warns on the unguarded arm before its accuracy has dropped 5 points.
    warned = result.first_warning["replace"]
    assert warned is not None
    assert acc["replace"][0] - acc["replace"][warned] < 0.05
    # The guard rejected generations of the guarded arm and said why.
    guard_logs = [r["guard"] for r in result.rows["guarded"][1:]]
    assert sum(g["batches_rejected"] for g in guard_logs) >= 5
    assert all(g["rejects_by_reason"] for g in guard_logs)
    # Outputs: the report and one JSONL log per arm, one line per generation.
    page = (result.out / "report.html").read_text()
    assert len(page) < 2_000_000 and page.count('<figure class="chart">') == 3
    assert "data:image/png;base64," in page  # the guard's last decision, with its thumbnails
    for arm in ("replace", "guarded", "accumulate"):
        lines = (result.out / f"{arm}.jsonl").read_text().splitlines()
        assert [json.loads(line)["generation"] for line in lines] == list(range(11))


@pytest.mark.slow
def test_the_demo_page_reads_in_a_browser(chromium: object, demo: DemoResult) -> None:
    path: Path = demo.out / "report.html"
    generation, report, _ = demo.checks[-1]
    with open_page(chromium, path) as opened:
        page = opened.page
        assert_readable(opened, charts=3)  # metrics, the guard's rejects, alignment
        # The ten-second summary: every arm's accuracy change and the rejected batches.
        summary = page.inner_text("#summary")
        rejected = sum(r["guard"]["batches_rejected"] for r in demo.rows["guarded"][1:])
        assert f"rejected {rejected} of 10 synthetic batches" in summary
        for arm, rows in demo.rows.items():
            first, last = rows[0]["metrics"]["accuracy"], rows[-1]["metrics"]["accuracy"]
            assert f"{arm}: real held-out accuracy {first:.3f} → {last:.3f}" in summary
        # A real table per generation and arm, warnings marked in it and on the charts.
        assert page.locator("#generations tbody tr").count() == 3 * 11
        warnings = [w for rows in demo.rows.values() for r in rows for w in r["warnings"]]
        assert warnings  # the default run warns (test above)
        assert page.locator("#generations tbody td:has-text('⚠')").count() == len(
            {(r["generation"], arm) for arm, rows in demo.rows.items() for r in rows
             if r["warnings"]}
        )  # fmt: skip
        marks = page.locator("figure.chart svg g[id^='metrics-mark-']").count()
        assert marks == len(warnings)
        # The guard's last decision, sample by sample: the filter shows the rejected ones.
        page.select_option("#reason-filter", "rejected")
        shown = visible_rows(page)
        assert shown == sorted(s.index for s in report.samples if not s.accepted)[: len(shown)]
        assert len(shown) == min(sum(not s.accepted for s in report.samples), 300) > 0
        assert f"generation {generation}" in page.inner_text("body")
