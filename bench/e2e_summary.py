"""The end-to-end figures of a run's rounds: every ratio, CPU time (the
collector's part of it too) and connection count with its bootstrap
interval over the rounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .common import bootstrap_interval, median, spread

BASELINE = "baseline"
FLOOR = "connection floor"
Figure = tuple[float, float, float]  # estimate, low, high


def figure(units: Sequence[Any], statistic: Any) -> Figure:
    low, high = bootstrap_interval(units, statistic)
    return statistic(units), low, high


def summarize(
    rounds: list[dict[str, dict[str, dict[str, Any]]]],
    variants: Sequence[str],
    conditions: Sequence[str],
) -> dict[str, Any]:
    """Every figure, with its bootstrap interval over the rounds."""
    tables: dict[str, dict[str, dict[str, Figure]]] = {}
    spreads: dict[str, dict[str, dict[str, float]]] = {}
    widest = 0.0
    for condition in conditions:
        units = [r[condition] for r in rounds]
        spreads[condition] = spreads_of(units, variants)

        def of(name: str, part: str, field: str) -> Any:
            return lambda us: median([u[name][part][field] for u in us])

        def of_baselines(field: str) -> Any:
            return lambda us: median(
                [u[name]["baseline"][field] for u in us for name in variants]
            )

        def ratio(name: str, field: str) -> Any:
            return lambda us: median(
                [u[name]["variant"][field] / u[name]["baseline"][field] for u in us]
            )

        rows: dict[str, dict[str, Figure]] = {
            BASELINE: {
                "pages_per_s": figure(units, of_baselines("pages_per_s")),
                "cpu_ms_per_page": figure(units, of_baselines("cpu_ms_per_page")),
                "gc_ms_per_page": figure(units, of_baselines("gc_ms_per_page")),
                "connections_per_page": figure(
                    units, of_baselines("connections_per_page")
                ),
            }
        }
        for name in variants:
            rows[name] = {
                "pages_per_s": figure(units, of(name, "variant", "pages_per_s")),
                "ratio": figure(units, ratio(name, "pages_per_s")),
                "cpu_ms_per_page": figure(
                    units, of(name, "variant", "cpu_ms_per_page")
                ),
                "cpu_ratio": figure(units, ratio(name, "cpu_ms_per_page")),
                "gc_ms_per_page": figure(units, of(name, "variant", "gc_ms_per_page")),
                "connections_per_page": figure(
                    units, of(name, "variant", "connections_per_page")
                ),
            }
            value, low, high = rows[name]["ratio"]
            widest = max(widest, (high - low) / 2 / value)
        if "memory" in variants and "redis" in variants:
            rows["redis - memory"] = {
                "ratio": figure(
                    units,
                    difference(
                        ratio("redis", "pages_per_s"), ratio("memory", "pages_per_s")
                    ),
                )
            }
        if "memory" in variants and FLOOR in variants:
            rows["memory / floor"] = {
                "ratio": figure(
                    units,
                    quotient(
                        ratio("memory", "pages_per_s"), ratio(FLOOR, "pages_per_s")
                    ),
                )
            }
        tables[condition] = rows
    return {"tables": tables, "spreads": spreads, "widest_halfwidth": widest}


def spreads_of(
    units: Sequence[Any], variants: Sequence[str]
) -> dict[str, dict[str, float]]:
    """(max - min) / median over the run: of single crawls' pages/s, and of
    each variant's per-pair ratios, which pairing makes steadier. Each over
    one crawl or pair a round (the baseline's: the median over the
    variants of the spread of the baseline crawls paired with each), so
    that every figure is a range over as many values."""
    crawls = {
        BASELINE: median(
            [
                spread([u[name]["baseline"]["pages_per_s"] for u in units])
                for name in variants
            ]
        )
    }
    ratios = {}
    for name in variants:
        crawls[name] = spread([u[name]["variant"]["pages_per_s"] for u in units])
        ratios[name] = spread(
            [
                u[name]["variant"]["pages_per_s"] / u[name]["baseline"]["pages_per_s"]
                for u in units
            ]
        )
    return {"crawls": crawls, "ratios": ratios}


def difference(first: Any, second: Any) -> Any:
    return lambda units: first(units) - second(units)


def quotient(first: Any, second: Any) -> Any:
    return lambda units: first(units) / second(units)
