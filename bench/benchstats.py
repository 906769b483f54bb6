"""Percentiles as every benchmark here prints them (nearest rank), so their figures compare."""

from __future__ import annotations

import math


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, nearest rank; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max: the four figures a latency report gives."""
    return {"p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99),
            "max": max(values) if values else math.nan}
