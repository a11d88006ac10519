"""The monitor itself: one JSONL record per generation, compared, trended and forwarded."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthguard._errors import CorruptFileError, InvalidInputError
from synthguard._io import WriterLock, atomic_write_text, read_file
from synthguard._validation import check_float, check_int, describe
from synthguard.monitor._loggers import as_sinks, record_metrics
from synthguard.monitor._trend import CollapseAlert, Trend, collapse_alerts, trend_of
from synthguard.report import GuardReport

__all__ = ["CollapseMonitor"]


class CollapseMonitor:
    """Track a self-consuming loop generation by generation.

    Args:
        path: JSONL log (created if missing; an existing one is resumed).
        alpha: level of the one-sided trend test behind a warning.
        window: the trend test uses the last ``window`` generations (at least 3).
        min_change: a falling metric (ratios, coverage) also needs to be at least this far
            (relative) below generation 0, so a significant but tiny drift is not called
            collapse.
        min_rise: a rising metric (distances to the reference, near 0 for real data, so a
            relative change of a few percent means nothing) needs to be at least this far
            (relative) above generation 0: 1.0 means doubled.
        loggers: experiment trackers each logged generation is also sent to, with the
            generation as the step: a TensorBoard ``SummaryWriter``, ``mlflow`` (the module
            or a run), a W&B run, a Lightning logger, or any callable ``(metrics, step)``.
            They get every metric, the guard's counts (``guard/...``) and the number of
            warnings, under ``prefix``; a tracker that fails warns, the record is kept.
            Generations logged before (a resumed file) are not sent again.
        prefix: of the names sent to ``loggers``.

    Raises:
        InvalidInputError: another monitor (in this process or another) has ``path`` open;
            close it first. Two writers would overwrite each other's records. Or a logger
            that fits none of the kinds above.
        CorruptFileError: ``path`` exists but is not a monitor log.

    The lock is released by :meth:`close`, at the end of a ``with`` block, or when the monitor
    is garbage-collected; a killed process releases it too.

    Example:
        >>> import tempfile, pathlib
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "loop.jsonl"
        >>> with CollapseMonitor(log) as monitor:
        ...     for g, v in enumerate([1.0, 0.97, 0.93, 0.9, 0.86]):
        ...         _ = monitor.log(g, {"variance_ratio": v})
        >>> [w.metric for w in monitor.warnings][:1]
        ['variance_ratio']
        >>> CollapseMonitor(log).next_generation  # resumed from the file
        5
    """

    def __init__(
        self,
        path: str | Path,
        *,
        alpha: float = 0.05,
        window: int = 5,
        min_change: float = 0.05,
        min_rise: float = 1.0,
        loggers: Sequence[Any] = (),
        prefix: str = "monitor/",
    ) -> None:
        self.path = Path(path)
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.window = check_int("window", window, minimum=3)
        self.min_change = check_float("min_change", min_change, low=0.0)
        self.min_rise = check_float("min_rise", min_rise, low=0.0)
        if not isinstance(prefix, str):
            raise InvalidInputError(f"prefix must be a string; got {describe(prefix)}")
        self._sinks = as_sinks(loggers)  # checked before the file is locked
        self.loggers = tuple(loggers)
        self.prefix = prefix
        # Taken before reading, so nobody can write between our read and our first write.
        self._lock = WriterLock(self.path, owner="CollapseMonitor")
        self._thread_lock = threading.RLock()  # log() from several threads: one at a time
        try:
            self.records: list[dict[str, Any]] = self._read()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Release the file for other writers; :meth:`log` then raises (reading still works)."""
        with self._thread_lock:
            self._lock.release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the file is no longer locked by this monitor)."""
        return not self._lock.held

    def __enter__(self) -> CollapseMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def next_generation(self) -> int:
        """The generation the next :meth:`log` call is expected to record."""
        return 0 if not self.records else int(self.records[-1]["generation"]) + 1

    @property
    def warnings(self) -> list[CollapseAlert]:
        """Every warning raised so far, in generation order."""
        return [CollapseAlert(**w) for r in self.records for w in r.get("warnings", [])]

    def log(
        self,
        generation: int,
        metrics: dict[str, float],
        *,
        reports: list[GuardReport] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one generation and return its record (with comparisons and warnings).

        Args:
            generation: must be :attr:`next_generation` (0 is the real data).
            metrics: metric name -> value (e.g. from :func:`generation_metrics`).
            reports: the guard's reports for this generation (verdicts and reject counts are
                summarised into the record; each concept group's mean Jensen–Shannon
                divergence becomes a metric ``concept_js/<group>``, tracked like the others).
            extra: any JSON-serialisable values to keep (e.g. downstream accuracy).

        Raises:
            InvalidInputError: a wrong generation, a metric that is not a number, an ``extra``
                that is not JSON-serialisable, or a closed monitor.
        """
        generation = check_int("generation", generation, minimum=0)
        clean = _numbers(metrics)
        for group, js in _concept_js(reports or []).items():
            clean.setdefault(f"concept_js/{group}", js)
        kept = _json_values(extra) if extra else None
        with self._thread_lock:  # check, append and write as one step
            if self.closed:
                raise InvalidInputError(
                    f"the monitor of {str(self.path)!r} was closed; open a new CollapseMonitor "
                    "to log more generations"
                )
            return self._log(generation, clean, reports, kept)

    def _log(
        self, generation: int, clean: dict[str, float], reports: list[Any] | None, extra: Any
    ) -> dict[str, Any]:
        if generation != self.next_generation:
            raise InvalidInputError(
                f"generation must be {self.next_generation} (the next one to log); got {generation}"
            )
        record: dict[str, Any] = {"generation": generation, "metrics": clean}
        if self.records:
            first, last = self.records[0]["metrics"], self.records[-1]["metrics"]
            record["vs_real"] = {k: _delta(v, first.get(k)) for k, v in clean.items()}
            record["vs_previous"] = {k: _delta(v, last.get(k)) for k, v in clean.items()}
        if reports is not None:
            record["guard"] = _summarise(reports)
        if extra:
            record["extra"] = extra
        history = [*self.records, record]
        record["trends"] = {
            k: t.model_dump() for k in clean if (t := self._trend(history, k)) is not None
        }
        alerts = collapse_alerts(
            history, record, window=self.window, alpha=self.alpha,
            min_change=self.min_change, min_rise=self.min_rise,
        )  # fmt: skip
        record["warnings"] = [w.model_dump() for w in alerts]
        # Kept in memory only once it is on disk: a failed write leaves both as they were.
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in history))
        self.records.append(record)
        self._forward(record)
        return record

    def trend(self, metric: str) -> Trend | None:
        """The trend of ``metric`` over the last ``window`` generations (``None``: too few)."""
        return self._trend(self.records, metric)

    # -- internals -------------------------------------------------------------------------

    def _trend(self, history: list[dict[str, Any]], metric: str) -> Trend | None:
        return trend_of(history, metric, self.window)

    def _forward(self, record: dict[str, Any]) -> None:
        """Send the record's numbers to every logger; a failing tracker warns (the record is
        already saved) rather than stopping the loop it watches."""
        if not self._sinks:
            return
        metrics = record_metrics(record, self.prefix)
        for name, sink in self._sinks:
            try:
                sink(metrics, record["generation"])
            except Exception as exc:
                warnings.warn(
                    f"{name} failed for generation {record['generation']} ({type(exc).__name__}: "
                    f"{exc}); the record is saved in {str(self.path)!r}",
                    UserWarning,
                    stacklevel=4,
                )

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        blob = read_file(self.path, max_bytes=None, what="monitor log")  # never a FIFO
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                f"{self.path}: byte {exc.start} ({blob[exc.start : exc.start + 1]!r}) is not "
                "UTF-8; the monitor writes UTF-8 JSON lines, so this is not a monitor log or "
                "was changed by something else"
            ) from exc
        records: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorruptFileError(
                    f"{self.path}: line {number} is not JSON ({exc}); the monitor writes whole "
                    "files atomically, so this file was changed by something else"
                ) from exc
            if not isinstance(record, dict) or record.get("generation") != len(records):
                raise CorruptFileError(
                    f"{self.path}: line {number} must be the record of generation "
                    f"{len(records)}; got {describe(record)}"
                )
            records.append(record)
        return records


def _numbers(metrics: Any) -> dict[str, float]:
    """``metrics`` as name -> float, naming the metric that is not a number."""
    if not isinstance(metrics, Mapping):
        raise InvalidInputError(
            f"metrics must be a mapping of name -> number; got {describe(metrics)}"
        )
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number = None  # strings and booleans convert with float() but are not measurements
        if not isinstance(value, (str, bytes, bool)):
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                number = float(value)  # ints, floats, numpy scalars, one-element tensors
        if number is None:
            raise InvalidInputError(
                f"metrics[{str(key)!r}] must be a number; got {describe(value)} "
                f"({type(value).__name__})"
            )
        clean[str(key)] = number
    return clean


def _json_values(extra: Any) -> Any:
    try:
        return json.loads(json.dumps(extra))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"extra must be JSON-serialisable: {exc}") from exc


def _delta(value: float, base: float | None) -> dict[str, float] | None:
    if base is None:
        return None
    relative = (value - base) / abs(base) if base else math.nan
    return {"absolute": value - base, "relative": relative}


def _concept_js(reports: list[GuardReport]) -> dict[str, float]:
    """Mean Jensen–Shannon divergence of each concept group over a generation's reports."""
    values: dict[str, list[float]] = {}
    for report in reports:
        for group, drift in report.concepts.items():
            values.setdefault(group, []).append(drift.js_divergence)
    return {g: sum(v) / len(v) for g, v in values.items()}


def _summarise(reports: list[GuardReport]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for r in reports:
        for code, count in r.rejects_by_reason.items():
            reasons[code] = reasons.get(code, 0) + count
    return {
        "batches": len(reports),
        "batches_rejected": sum(not r.accepted for r in reports),
        "samples": sum(r.n_samples for r in reports),
        "samples_accepted": sum(r.n_accepted for r in reports if r.accepted),
        "relabeled": sum(r.n_relabeled for r in reports),
        "rejects_by_reason": reasons,
    }
