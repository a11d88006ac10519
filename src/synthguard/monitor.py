"""CollapseMonitor: metrics across generations of a self-consuming loop, trends and warnings.

One record per generation goes to a JSONL file, rewritten atomically on every ``log`` (a crash
leaves the previous file intact and a new monitor on the same path resumes from it). A monitor
is the file's one writer: it holds an exclusive lock (``.NAME.lock`` beside it) from creation to
:meth:`~CollapseMonitor.close`, and ``log`` may be called from several threads. Every
record is compared with generation 0 (real data) and with the previous generation; each
metric gets a trend test (Mann–Kendall, i.e. Kendall's τ against the generation index, with
Theil–Sen slope) over the generations so far, and a *sustained* move in the collapse direction
raises an early warning: diversity and coverage falling, distances to the reference rising.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict
from scipy import stats as scipy_stats

from synthguard._errors import CorruptFileError, InvalidInputError
from synthguard._io import WriterLock, atomic_write_text, read_file
from synthguard._validation import check_float, check_int, describe
from synthguard.functional import collapse_metrics
from synthguard.reference import Reference
from synthguard.report import GuardReport

__all__ = ["CollapseAlert", "CollapseMonitor", "Trend", "generation_metrics"]

#: Metrics the monitor knows the collapse direction of ("down": falling is collapse).
COLLAPSE_DIRECTIONS: dict[str, Literal["down", "up"]] = {
    "variance_ratio": "down",
    "vendi_ratio": "down",
    "coverage": "down",
    "frechet_distance": "up",
    "cmmd": "up",
}


#: What :func:`generation_metrics` reports, from :func:`~synthguard.functional.collapse_metrics`.
GENERATION_METRICS = (
    "variance_ratio",
    "vendi_ratio",
    "coverage",
    "frechet_distance",
    "cmmd",
    "alignment_mean",
)


def generation_metrics(reference: Reference, image: Any, text: Any) -> dict[str, float]:
    """Collapse metrics of one generation's embeddings against the reference support.

    ``variance_ratio`` (total variance), ``vendi_ratio``, ``coverage`` (k-NN balls of the
    reference's coverage rows hit), ``frechet_distance``, ``cmmd`` (against the reference's
    CMMD rows) and ``alignment_mean``: :func:`synthguard.functional.collapse_metrics` against
    :meth:`Reference.collapse_reference`. Rows are L2-normalised; NaN or zero rows
    (unembeddable samples) are left out.
    """
    img = torch.as_tensor(image, dtype=torch.float64)
    txt = torch.as_tensor(text, dtype=torch.float64)
    keep = torch.isfinite(img).all(1) & torch.isfinite(txt).all(1)
    keep &= (img.norm(dim=1) > 0) & (txt.norm(dim=1) > 0)
    # Unit rows, so alignment is the cosine (float32 encoders are unit only to ~1e-7).
    img = torch.nn.functional.normalize(img[keep], dim=1)
    txt = torch.nn.functional.normalize(txt[keep], dim=1)
    if img.shape[0] <= reference.k:
        raise InvalidInputError(
            f"image must have more than k={reference.k} embeddable rows; got {img.shape[0]}"
        )
    metrics = collapse_metrics(img, txt, reference.collapse_reference())
    return {name: metrics[name] for name in GENERATION_METRICS}


class Trend(BaseModel):
    """Mann–Kendall trend of one metric over the generations logged so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    slope: float  # Theil–Sen slope per generation
    tau: float  # Kendall's τ against the generation index
    p_value: float  # two-sided Mann–Kendall p-value
    generations: int


class CollapseAlert(BaseModel):
    """A sustained move of a metric in its collapse direction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generation: int
    metric: str
    value: float
    change_from_real: float  # relative change against generation 0
    trend: Trend
    message: str


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

    Raises:
        InvalidInputError: another monitor (in this process or another) has ``path`` open;
            close it first. Two writers would overwrite each other's records.
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
    ) -> None:
        self.path = Path(path)
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.window = check_int("window", window, minimum=3)
        self.min_change = check_float("min_change", min_change, low=0.0)
        self.min_rise = check_float("min_rise", min_rise, low=0.0)
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
        record["warnings"] = [w.model_dump() for w in self._warnings(history, record)]
        # Kept in memory only once it is on disk: a failed write leaves both as they were.
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in history))
        self.records.append(record)
        return record

    def trend(self, metric: str) -> Trend | None:
        """The trend of ``metric`` over the last ``window`` generations (``None``: too few)."""
        return self._trend(self.records, metric)

    # -- internals -------------------------------------------------------------------------

    def _trend(self, history: list[dict[str, Any]], metric: str) -> Trend | None:
        points = [
            (r["generation"], r["metrics"][metric])
            for r in history[-self.window :]
            if metric in r["metrics"] and math.isfinite(r["metrics"][metric])
        ]
        if len(points) < 3:
            return None
        x, y = zip(*points, strict=True)
        tau, p = scipy_stats.kendalltau(x, y)
        slope = scipy_stats.theilslopes(y, x).slope
        tau = 0.0 if math.isnan(tau) else float(tau)
        return Trend(
            metric=metric,
            slope=float(slope),
            tau=tau,
            p_value=1.0 if math.isnan(p) else float(p),
            generations=len(points),
        )

    def _warnings(
        self, history: list[dict[str, Any]], record: dict[str, Any]
    ) -> list[CollapseAlert]:
        out = []
        first = history[0]["metrics"]
        directions = dict(COLLAPSE_DIRECTIONS)
        directions.update({k: "up" for k in record["metrics"] if k.startswith("concept_js/")})
        for metric, direction in directions.items():
            trend = self._trend(history, metric)
            if trend is None or metric not in first or not first[metric]:
                continue
            sign = -1.0 if direction == "down" else 1.0
            value = record["metrics"][metric]
            change = (value - first[metric]) / abs(first[metric])
            # One-sided Mann–Kendall: half the two-sided p when τ points the collapse way.
            one_sided = trend.p_value / 2 if sign * trend.tau > 0 else 1.0
            needed = self.min_change if direction == "down" else self.min_rise
            if one_sided <= self.alpha and sign * change >= needed:
                out.append(
                    CollapseAlert(
                        generation=record["generation"],
                        metric=metric,
                        value=value,
                        change_from_real=change,
                        trend=trend,
                        message=(
                            f"{metric} has {'fallen' if sign < 0 else 'risen'} for "
                            f"{trend.generations} generations (Mann–Kendall p = {one_sided:.3g}, "
                            f"{change:+.1%} vs real)"
                        ),
                    )
                )
        return out

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
