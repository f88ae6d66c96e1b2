"""The end-to-end section as Markdown: one table per gateway condition, every
figure with its 95 % interval, and the targets (met by the estimate, and
whether the whole interval meets them)."""

from __future__ import annotations

from typing import Any

from .common import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Report
from .e2e_summary import Figure

CONNECTIONS_PER_PAGE = 0.35


def fmt(fig: Figure | list[float], digits: int = 3) -> str:
    value, low, high = fig
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def verdict(all_meet: bool, none_meets: bool) -> str:
    return "yes" if all_meet else "no" if none_meets else "straddles"


def at_least(fig: Figure | list[float], floor: float) -> tuple[bool, str]:
    value, low, high = fig
    return value >= floor, verdict(low >= floor, high < floor)


def at_most(fig: Figure | list[float], ceiling: float) -> tuple[bool, str]:
    value, low, high = fig
    return value <= ceiling, verdict(high <= ceiling, low > ceiling)


def within(fig: Figure | list[float], margin: float) -> tuple[bool, str]:
    value, low, high = fig
    inside = -margin <= low and high <= margin
    return abs(value) <= margin, verdict(inside, high < -margin or low > margin)


def describe(result: dict[str, Any]) -> list[str]:
    minutes = result["seconds"] / 60
    return [
        f"### 1. End to end: {result['pages']} pages ({result['items']} items and "
        f"their 3 follow-ups) through the sandbox gateway, {result['pairs']} pairs "
        "per variant and gateway",
        "",
        "Each pair is the variant's crawl and a baseline crawl (a fixed proxy "
        'in `meta["proxy"]`, no plugin) back to back, in alternating order '
        f"and in chunks of {result['chunk_items']} items (A B B A ...). "
        "ratio: the median of the per-pair ratios of pages/s; crawler CPU: "
        "process CPU time over the crawl, per page; of which collector: the "
        "time Python's cyclic garbage collector ran in it (`gc.callbacks`); "
        "new connections: client "
        "connections the sandbox gateway accepted during the crawl, per page. "
        f"[95 % interval]: percentile bootstrap over the {result['pairs']} rounds "
        f"(a round: one pair of every variant under each gateway; "
        f"{BOOTSTRAP_RESAMPLES} resamples, `random.Random({BOOTSTRAP_SEED})`). "
        f"Rounds were added from {result['min_pairs']} until every ratio's "
        f"half-width was <= {result['halfwidth_target']:.0%} (at most "
        f"{result['max_pairs']}): {result['pairs']} rounds, widest half-width "
        f"{result['widest_halfwidth']:.1%}, {result['crawls']} timed crawls "
        f"in {minutes:.1f} min." + settings_sentence(result.get("settings", [])),
        "",
    ]


def settings_sentence(settings: list[str]) -> str:
    if not settings:
        return ""
    listed = ", ".join(f"`{setting}`" for setting in settings)
    return f" Every crawl, the baseline's included, with {listed}."


def condition_title(condition: str, latency: list[float]) -> str:
    if not any(latency):
        return f"#### {condition}: the sandbox as it is"
    return (
        f"#### {condition}: the gateway waits {latency[0] * 1000:.0f} ms per new "
        f"client connection and {latency[1] * 1000:.0f} ms per request"
    )


def table_rows(rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    out = []
    for name, row in rows.items():
        if "pages_per_s" not in row:  # two ratios' difference or quotient
            out.append([name, "-", fmt(row["ratio"]), "-", "-", "-", "-"])
            continue
        out.append(
            [
                name,
                fmt(row["pages_per_s"], 0),
                fmt(row["ratio"]) if "ratio" in row else "1",
                fmt(row["cpu_ms_per_page"]),
                fmt(row["gc_ms_per_page"]),
                fmt(row["cpu_ratio"]) if "cpu_ratio" in row else "1",
                fmt(row["connections_per_page"]),
            ]
        )
    return out


def spread_line(spreads: dict[str, dict[str, float]]) -> str:
    def listed(values: dict[str, float]) -> str:
        return ", ".join(f"{name} {value:.0%}" for name, value in values.items())

    return (
        "Spread, (max - min) / median over the run: single crawls' pages/s "
        f"{listed(spreads['crawls'])}; per-pair ratios {listed(spreads['ratios'])}."
    )


def report_e2e(r: Report, result: dict[str, Any]) -> None:
    for line in describe(result):
        r.out(line)
    for condition, rows in result["tables"].items():
        latency = result["latency"][condition]
        r.out(condition_title(condition, latency))
        r.out()
        r.table(
            [
                "variant",
                "pages/s",
                "ratio to baseline",
                "crawler CPU ms/page",
                "of which collector ms/page",
                "CPU ratio",
                "new connections/page",
            ],
            table_rows(rows),
        )
        spreads = result.get("spreads", {}).get(condition)
        if spreads:
            r.out(spread_line(spreads))
            r.out()
        targets(r, condition, rows)
    r.target(
        f"e2e ratio intervals' half-width <= {result['halfwidth_target']:.0%}",
        f"widest {result['widest_halfwidth']:.1%} after {result['pairs']} pairs",
        result["widest_halfwidth"] <= result["halfwidth_target"],
    )


def targets(r: Report, condition: str, rows: dict[str, dict[str, Any]]) -> None:
    floors = {"memory": 0.97, "redis": 0.95 if condition == "loopback" else None}
    for name, floor in floors.items():
        if name in rows and floor is not None:
            fig = rows[name]["ratio"]
            name_ = f"e2e {condition}: {name} / baseline >= {floor}"
            r.target(name_, fmt(fig), *at_least(fig, floor))
    if "redis - memory" in rows:
        fig = rows["redis - memory"]["ratio"]
        name_ = f"e2e {condition}: redis within 0.02 of memory"
        r.target(name_, fmt(fig), *within(fig, 0.02))
    for name in ("memory", "redis"):
        if name in rows:
            fig = rows[name]["connections_per_page"]
            name_ = f"e2e {condition}: {name}, new connections/page <= 0.35"
            r.target(name_, fmt(fig), *at_most(fig, CONNECTIONS_PER_PAGE))


def print_result(result: dict[str, Any]) -> None:
    """``python -m bench.e2e``: the section and its targets."""
    r = Report()
    report_e2e(r, result)
    r.table(
        ["target", "measured", "met", "whole interval meets it"],
        [
            [name, value, "yes" if met else "**no**", interval]
            for name, value, met, interval in r.targets
        ],
    )
