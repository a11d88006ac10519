"""CollapseMonitor: trend statistics against brute force, warnings, atomic resumable logs."""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard as sg
from synthguard.monitor import generation_metrics


def _mann_kendall_exact(y: list[float]) -> tuple[float, float]:
    """S statistic and exact two-sided p over all orderings (no ties)."""
    n = len(y)

    def s_of(values: tuple[float, ...]) -> int:
        return sum(np.sign(values[j] - values[i]) for i in range(n) for j in range(i + 1, n))

    s = s_of(tuple(y))
    all_s = [s_of(p) for p in itertools.permutations(y)]
    p = sum(abs(v) >= abs(s) for v in all_s) / len(all_s)
    return s, p


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=6, unique=True))
def test_trend_matches_brute_force_mann_kendall_and_theil_sen(values: list[float]) -> None:
    monitor = sg.CollapseMonitor(Path(tempfile.mkdtemp()) / "log.jsonl", window=10)
    for g, v in enumerate(values):
        monitor.log(g, {"x": v})
    trend = monitor.trend("x")
    assert trend is not None and trend.generations == len(values)
    s, p = _mann_kendall_exact(values)
    n = len(values)
    assert trend.tau == pytest.approx(s / (n * (n - 1) / 2))
    assert trend.p_value == pytest.approx(p, abs=1e-9)
    slopes = [(values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    assert trend.slope == pytest.approx(float(np.median(slopes)))


def test_a_sustained_decline_warns_once_four_generations_show_it(tmp_path: Path) -> None:
    monitor = sg.CollapseMonitor(tmp_path / "log.jsonl")
    records = [monitor.log(g, {"variance_ratio": v}) for g, v in
               enumerate([1.0, 0.97, 0.94, 0.90, 0.86])]  # fmt: skip
    assert [bool(r["warnings"]) for r in records] == [False, False, False, True, True]
    warning = monitor.warnings[0]
    assert warning.generation == 3 and warning.metric == "variance_ratio"
    assert warning.change_from_real == pytest.approx(-0.10)
    assert "Mann–Kendall" in warning.message


def test_a_generation_may_leave_a_tracked_metric_out(tmp_path: Path) -> None:
    """A falling metric missing from the newest generation raised KeyError, and the generation
    was lost; it is simply not warned about there (the trend resumes when it comes back)."""
    monitor = sg.CollapseMonitor(tmp_path / "log.jsonl")
    for g, v in enumerate([1.0, 0.9, 0.8, 0.7]):
        monitor.log(g, {"variance_ratio": v, "accuracy": 0.9})
    record = monitor.log(4, {"accuracy": 0.8})
    assert record["warnings"] == [] and monitor.next_generation == 5
    assert [w.generation for w in monitor.warnings] == [3]
    assert monitor.log(5, {"variance_ratio": 0.6})["warnings"][0]["metric"] == "variance_ratio"


def test_no_warning_for_noise_or_tiny_moves(tmp_path: Path) -> None:
    noisy = sg.CollapseMonitor(tmp_path / "a.jsonl")
    for g, v in enumerate([1.0, 0.99, 1.01, 0.995, 1.0, 1.005, 0.99]):
        noisy.log(g, {"vendi_ratio": v, "frechet_distance": 0.01 + 0.001 * g})
    # FD rises steadily but only +60 % (< min_rise = doubling); Vendi is noise.
    assert noisy.warnings == []
    rising = sg.CollapseMonitor(tmp_path / "b.jsonl")
    for g, v in enumerate([0.01, 0.012, 0.016, 0.025, 0.04]):
        rising.log(g, {"frechet_distance": v})
    assert [w.generation for w in rising.warnings] == [3, 4]


def test_log_is_atomic_and_resumable(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    first = sg.CollapseMonitor(path)
    first.log(0, {"coverage": 1.0}, extra={"accuracy": 0.97})
    first.log(1, {"coverage": 0.9})
    first.close()  # one writer per file: the lock file goes with it
    assert [p.name for p in tmp_path.iterdir()] == ["loop.jsonl"]
    resumed = sg.CollapseMonitor(path)
    assert resumed.next_generation == 2
    record = resumed.log(2, {"coverage": 0.8})
    assert record["vs_real"]["coverage"]["relative"] == pytest.approx(-0.2)
    assert record["vs_previous"]["coverage"]["absolute"] == pytest.approx(-0.1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["generation"] for r in lines] == [0, 1, 2]
    assert lines[0]["extra"] == {"accuracy": 0.97}
    with pytest.raises(sg.InvalidInputError, match="generation must be 3"):
        resumed.log(5, {"coverage": 0.7})


def test_a_damaged_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    path.write_text('{"generation": 0, "metrics": {}}\n{"generation": 1, "metr')
    with pytest.raises(sg.CorruptFileError, match="line 2"):
        sg.CollapseMonitor(path)
    path.write_text('{"generation": 0, "metrics": {}}\n{"generation": 5, "metrics": {}}\n')
    with pytest.raises(sg.CorruptFileError, match="generation 1"):
        sg.CollapseMonitor(path)


def test_generation_metrics_of_real_data_are_near_one(digits_encoder: object) -> None:
    from synthguard.datasets import load_digits

    test = load_digits("test")
    image = digits_encoder.encode_images(test.images)  # type: ignore[attr-defined]
    text = digits_encoder.encode_texts(test.captions)  # type: ignore[attr-defined]
    ref = sg.Reference.from_embeddings(image[:270], text[:270])
    metrics = generation_metrics(ref, image[270:], text[270:])
    assert 0.85 < metrics["variance_ratio"] < 1.15 and 0.85 < metrics["vendi_ratio"] < 1.15
    collapsed = generation_metrics(ref, image[270:271].repeat(100, 1), text[270:271].repeat(100, 1))
    assert collapsed["variance_ratio"] < 1e-6 and collapsed["coverage"] < 0.1
    assert math.isfinite(collapsed["frechet_distance"])
