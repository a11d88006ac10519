"""Forwarding each generation's numbers to experiment trackers.

A logger is resolved once, when the monitor is made, to a function ``(metrics, step) -> None``:

- a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``): one scalar per name, then
  ``flush()``;
- an MLflow run (``mlflow.start_run()``'s ``ActiveRun``, anything with ``info.run_id``):
  ``mlflow.log_metrics(metrics, step=, run_id=)``;
- the ``mlflow`` module, a Lightning logger (``TensorBoardLogger``, ``CSVLogger``,
  ``MLFlowLogger``, ``WandbLogger``) or anything with ``log_metrics``:
  ``log_metrics(metrics, step=step)`` (and ``save()`` for a Lightning logger);
- a W&B run or the ``wandb`` module (anything with ``log``): ``run.log(metrics, step=step)``;
- any callable ``(metrics, step)``.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard._validation import describe

__all__ = ["MetricsSink", "as_sinks", "record_metrics"]

MetricsSink = Callable[[dict[str, float], int], None]

_ACCEPTED = (
    "a TensorBoard SummaryWriter, mlflow (the module or a run), a W&B run, a Lightning logger "
    "or a callable (metrics: dict[str, float], step: int) -> None"
)


def as_sinks(loggers: Sequence[Any]) -> list[tuple[str, MetricsSink]]:
    """Each logger as (a name for messages, its sink); the first that fits no rule is named."""
    if isinstance(loggers, (str, bytes)) or not isinstance(loggers, Sequence):
        raise InvalidInputError(f"loggers must be a list of loggers; got {describe(loggers)}")
    return [
        (f"loggers[{i}] ({type(logger).__name__})", _sink(logger, f"loggers[{i}]"))
        for i, logger in enumerate(loggers)
    ]


def _sink(logger: Any, where: str) -> MetricsSink:
    if isinstance(logger, logging.Logger):  # has .log(level, msg): not a metrics logger
        raise InvalidInputError(
            f"{where} must be {_ACCEPTED}; got the logging.Logger {logger.name!r}, which writes "
            "text: pass lambda metrics, step: log.info('%s %s', step, metrics) instead"
        )
    if callable(getattr(logger, "add_scalar", None)):
        return _tensorboard(logger)
    run_id = getattr(getattr(logger, "info", None), "run_id", None)
    if isinstance(run_id, str):
        return _mlflow_run(run_id)
    if callable(getattr(logger, "log_metrics", None)):
        return _log_metrics(logger)
    if callable(getattr(logger, "log", None)):
        return lambda metrics, step: logger.log(metrics, step=step)
    if callable(logger):
        return lambda metrics, step: logger(metrics, step)
    raise InvalidInputError(f"{where} must be {_ACCEPTED}; got {describe(logger)}")


def _tensorboard(writer: Any) -> MetricsSink:
    def log(metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            writer.add_scalar(name, value, global_step=step)
        flush = getattr(writer, "flush", None)
        if callable(flush):  # the event file is read by others while the loop runs
            flush()

    return log


def _mlflow_run(run_id: str) -> MetricsSink:
    def log(metrics: dict[str, float], step: int) -> None:
        import mlflow  # the run came from it, so it is installed

        mlflow.log_metrics(metrics, step=step, run_id=run_id)

    return log


def _log_metrics(logger: Any) -> MetricsSink:
    lightning = sys.modules.get("lightning.pytorch.loggers")  # imported if logger is one
    is_lightning = lightning is not None and isinstance(logger, lightning.Logger)

    def log(metrics: dict[str, float], step: int) -> None:
        logger.log_metrics(metrics, step=step)
        if is_lightning:  # CSVLogger buffers rows until save()
            logger.save()

    return log


def record_metrics(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of one monitor record as flat names: every metric, the guard's counts
    (``guard/...``, ``guard/rejects/<reason>``) and the number of warnings it raised. NaN and
    infinite values are left out (trackers refuse them)."""
    out: dict[str, float] = {f"{prefix}{k}": float(v) for k, v in record["metrics"].items()}
    guard = record.get("guard")
    if guard:
        for key, value in guard.items():
            if key == "rejects_by_reason":
                out.update({f"{prefix}guard/rejects/{c}": float(n) for c, n in value.items()})
            else:
                out[f"{prefix}guard/{key}"] = float(value)
    out[f"{prefix}warnings"] = float(len(record.get("warnings", [])))
    return {k: v for k, v in out.items() if math.isfinite(v)}
