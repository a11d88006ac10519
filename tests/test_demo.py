"""The demo's claims, measured on its default run (the numbers the README states)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthguard.cli._demo._run import run_demo


@pytest.mark.slow
def test_the_demo_shows_collapse_and_the_guard_catching_it(tmp_path: Path) -> None:
    result = run_demo(10, seed=0, out=tmp_path, progress=False)
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
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 6 and "data:image/png;base64" in html
    for arm in ("replace", "guarded", "accumulate"):
        lines = (tmp_path / f"{arm}.jsonl").read_text().splitlines()
        assert [json.loads(line)["generation"] for line in lines] == list(range(11))
