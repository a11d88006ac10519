"""Trends across generations (Mann–Kendall with Theil–Sen slope) and the warnings they raise."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict
from scipy import stats as scipy_stats

from synthguard.monitor._metrics import COLLAPSE_DIRECTIONS

__all__ = ["CollapseAlert", "Trend", "collapse_alerts", "trend_of"]


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


def trend_of(history: list[dict[str, Any]], metric: str, window: int) -> Trend | None:
    """The trend of ``metric`` over the last ``window`` records (``None``: fewer than 3)."""
    points = [
        (r["generation"], r["metrics"][metric])
        for r in history[-window:]
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


def collapse_alerts(
    history: list[dict[str, Any]],
    record: dict[str, Any],
    *,
    window: int,
    alpha: float,
    min_change: float,
    min_rise: float,
) -> list[CollapseAlert]:
    """The warnings ``record`` (the last of ``history``) raises; see :class:`CollapseMonitor`."""
    out = []
    first = history[0]["metrics"]
    directions = dict(COLLAPSE_DIRECTIONS)
    directions.update({k: "up" for k in record["metrics"] if k.startswith("concept_js/")})
    for metric, direction in directions.items():
        if metric not in record["metrics"] or metric not in first or not first[metric]:
            continue  # a generation may leave a metric out: nothing to warn about then
        trend = trend_of(history, metric, window)
        if trend is None:
            continue
        sign = -1.0 if direction == "down" else 1.0
        value = record["metrics"][metric]
        change = (value - first[metric]) / abs(first[metric])
        # One-sided Mann–Kendall: half the two-sided p when τ points the collapse way.
        one_sided = trend.p_value / 2 if sign * trend.tau > 0 else 1.0
        needed = min_change if direction == "down" else min_rise
        if one_sided <= alpha and sign * change >= needed:
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
