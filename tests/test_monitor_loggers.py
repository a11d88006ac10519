"""CollapseMonitor(loggers=...) sends each generation to trackers: read back, the values are the
record's, as the JSONL file on disk has them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import synthguard as sg

#: Five generations of a loop whose diversity falls: the last ones raise warnings.
VALUES = [
    {"variance_ratio": 1.0, "vendi_ratio": 1.01, "frechet_distance": 0.02},
    {"variance_ratio": 0.96, "vendi_ratio": 0.97, "frechet_distance": 0.03},
    {"variance_ratio": 0.9, "vendi_ratio": 0.92, "frechet_distance": 0.05},
    {"variance_ratio": 0.85, "vendi_ratio": 0.86, "frechet_distance": 0.08},
    {"variance_ratio": 0.79, "vendi_ratio": 0.8, "frechet_distance": float("nan")},
]


@pytest.fixture(scope="module")
def report() -> sg.GuardReport:
    """A real report with rejects (pairs embedded elsewhere; no encoder needed)."""
    g = torch.Generator().manual_seed(0)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=1)

    real = unit(torch.randn(300, 8, generator=g))
    reference = sg.Reference.from_embeddings(
        real, unit(real + 0.3 * torch.randn(300, 8, generator=g))
    )
    guard = sg.Guard(reference, sg.GuardConfig(batch_tests=()))
    batch = unit(torch.randn(40, 8, generator=g))
    text = unit(batch + 0.3 * torch.randn(40, 8, generator=g))
    text[:6] = unit(torch.randn(6, 8, generator=g))  # misaligned captions
    out = guard.check_embeddings(batch, text)
    assert out.rejects_by_reason
    return out


def _run(path: Path, loggers: list[Any], report: sg.GuardReport) -> list[dict[str, Any]]:
    with sg.CollapseMonitor(path, loggers=loggers) as monitor:
        for g, metrics in enumerate(VALUES):
            monitor.log(g, metrics, reports=[report] if g == 2 else None)
    assert any(r["warnings"] for r in monitor.records)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected(records: list[dict[str, Any]], prefix: str = "monitor/") -> dict[str, list[Any]]:
    """name -> [(step, value)] computed from the JSONL records, independently of the code."""
    out: dict[str, list[Any]] = {}
    for r in records:
        values = {f"{prefix}{k}": v for k, v in r["metrics"].items()}
        values[f"{prefix}warnings"] = len(r["warnings"])
        if "guard" in r:
            g = r["guard"]
            for key in ("batches", "batches_rejected", "samples", "samples_accepted", "relabeled"):
                values[f"{prefix}guard/{key}"] = g[key]
            for code, n in g["rejects_by_reason"].items():
                values[f"{prefix}guard/rejects/{code}"] = n
        for name, value in values.items():
            if value == value:  # NaN is not sent
                out.setdefault(name, []).append((r["generation"], float(value)))
    return out


def test_tensorboard_event_file_holds_every_generation(
    tmp_path: Path, report: sg.GuardReport
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    records = _run(tmp_path / "loop.jsonl", [writer], report)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    want = _expected(records)
    assert set(events.Tags()["scalars"]) == set(want)
    assert "monitor/guard/rejects/low_alignment" in want and "monitor/warnings" in want
    for tag, points in want.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_mlflow_file_store_holds_every_generation(
    tmp_path: Path, report: sg.GuardReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no database store
    previous = mlflow.get_tracking_uri()
    uri = f"file:{tmp_path / 'mlruns'}"
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:  # a run, and the module logging into the active run
            records = _run(tmp_path / "a.jsonl", [run], report)
            _run(tmp_path / "b.jsonl", [mlflow], report)
    finally:
        mlflow.set_tracking_uri(previous)
    client = mlflow.MlflowClient(uri)
    for key, points in _expected(records).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == sorted(points * 2), key  # the same steps twice: two monitors


def test_a_wandb_run_and_a_callable_get_the_same_numbers(
    tmp_path: Path, report: sg.GuardReport
) -> None:
    class Run:  # the W&B run's call: run.log(data, step=)
        def __init__(self) -> None:
            self.calls: list[tuple[dict[str, float], int]] = []

        def log(self, data: dict[str, float], step: int) -> None:
            self.calls.append((dict(data), step))

    run, calls = Run(), []
    records = _run(tmp_path / "loop.jsonl", [run, lambda m, s: calls.append((m, s))], report)
    assert run.calls == calls
    got: dict[str, list[Any]] = {}
    for metrics, step in calls:
        for name, value in metrics.items():
            got.setdefault(name, []).append((step, value))
    assert got == _expected(records)


def test_bad_loggers_are_named_and_a_failing_tracker_only_warns(tmp_path: Path) -> None:
    with pytest.raises(sg.InvalidInputError, match=r"loggers\[1\] must be a TensorBoard .* got 3"):
        sg.CollapseMonitor(tmp_path / "a.jsonl", loggers=[print, 3])
    with pytest.raises(sg.InvalidInputError, match=r"loggers\[0\] .* the logging.Logger 'x'"):
        sg.CollapseMonitor(tmp_path / "a.jsonl", loggers=[logging.getLogger("x")])
    with pytest.raises(sg.InvalidInputError, match="loggers must be a list of loggers; got"):
        sg.CollapseMonitor(tmp_path / "a.jsonl", loggers=print)  # type: ignore[arg-type]

    def broken(metrics: dict[str, float], step: int) -> None:
        raise ConnectionError("tracker unreachable")

    failed = r"loggers\[0\] \(function\) failed for generation 0"
    with (
        sg.CollapseMonitor(tmp_path / "b.jsonl", loggers=[broken]) as monitor,
        pytest.warns(UserWarning, match=failed),
    ):
        monitor.log(0, {"variance_ratio": 1.0})
    assert json.loads((tmp_path / "b.jsonl").read_text())["metrics"] == {"variance_ratio": 1.0}


# -- examples/monitor_trackers.py -------------------------------------------------------------


@pytest.mark.slow
def test_monitor_trackers_logs_one_record_to_the_file_tensorboard_and_mlflow(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from test_examples import _load

    assert _load("monitor_trackers").main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "loop.jsonl").read_text().splitlines()]
    ratios = [r["metrics"]["variance_ratio"] for r in records]
    assert len(records) == 5 and ratios[-1] < 0.85 * ratios[0]  # diversity lost
    assert "variance_ratio" in [w["metric"] for w in records[-1]["warnings"]]
    assert "generation 4 (2 classes): rejected" in out
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("monitor/variance_ratio")] == pytest.approx(ratios)
    run_id = out.split("MLflow run ")[1].split()[0]
    history = mlflow.MlflowClient(f"file:{tmp_path / 'mlruns'}").get_metric_history(
        run_id, "monitor/variance_ratio"
    )
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(ratios)
