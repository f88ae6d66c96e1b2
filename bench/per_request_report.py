"""The per-request section as Markdown: every row's cost and its ratios to
HttpProxyMiddleware and to scrapy-rotating-proxies, each with its 95 %
interval, and the issue 16 targets (met by the median, and whether the
whole interval meets them)."""

from __future__ import annotations

from typing import Any

from .common import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Report
from .e2e_report import at_most, fmt

HTTPPROXY, ROTATING = "HttpProxyMiddleware", "rotating-proxies"
#: (row, label, ceiling vs HttpProxyMiddleware, ceiling vs rotating-proxies)
TARGETS = (
    ("sticky (memory)", "", 1.5, 0.75),
    ("sticky (pool of 8)", ", pool of 8", 1.5, 0.75),
)


def us(fig: Any) -> str:
    return fmt([value * 1e6 for value in fig], 2)


def ratio_cell(result: dict[str, Any], base: str, name: str) -> str:
    ratios = result["ratios"].get(base)
    if ratios is None:
        return "-"
    return "1" if name == base else fmt(ratios[name], 2)


def describe(result: dict[str, Any]) -> list[str]:
    return [
        f"### 2. Per request: process_request + process_response, "
        f"{result['requests']} requests per pass, {result['rounds']} rounds",
        "",
        "A round times one pass of every row over fresh requests, in an order "
        "that rotates by one each round; a pass is timed in the thread's CPU "
        "time (`time.thread_time()`: the waits for a core on a shared machine "
        "are no row's cost). A ratio is taken inside each round (the row's "
        "pass over the baseline's pass of the same round), and every figure "
        "is the median over the rounds [95 % percentile bootstrap interval "
        f"over the rounds, {BOOTSTRAP_RESAMPLES} resamples, "
        f"`random.Random({BOOTSTRAP_SEED})`]. Garbage collection, the same for "
        "every pass: `gc.collect()` then `gc.freeze()` before it (what is "
        "alive then, its inputs and every row's state, is out of the "
        "collector's reach), the collector on during it: a row pays for the "
        "collections its own allocations trigger, and none walks what other "
        "rows keep (`gc.unfreeze()` after the last round). The rows without "
        "StickyProxyLedger have the ledger entries it would have closed "
        "closed between passes. After one untimed warm-up round, rounds were "
        f"added from {result['min_rounds']} until every ratio's half-width "
        f"was <= {result['halfwidth_target']:.0%} (at most "
        f"{result['max_rounds']} rounds or {result['budget']:.0f} s): "
        f"{result['rounds']} rounds, widest half-width "
        f"{result['widest_halfwidth']:.1%}, {result['seconds_spent']:.0f} s.",
        "",
    ]


def report_per_request(r: Report, result: dict[str, Any]) -> None:
    for line in describe(result):
        r.out(line)
    r.table(
        [
            "middleware",
            "us/request",
            f"vs {HTTPPROXY}",
            f"vs {ROTATING}",
        ],
        [
            [
                name,
                us(fig),
                ratio_cell(result, HTTPPROXY, name),
                ratio_cell(result, ROTATING, name),
            ]
            for name, fig in result["seconds"].items()
        ],
    )
    if result.get("pairs"):
        r.out("This checkout against the code given with `--old` (`main: ` rows):")
        r.out()
        r.table(
            ["row", "this / main, per round"],
            [[name, fmt(fig, 3)] for name, fig in result["pairs"].items()],
        )
    rotating = result["ratios"].get(ROTATING)
    for row, label, vs_http, vs_rotating in TARGETS:
        fig = result["ratios"][HTTPPROXY][row]
        name = f"per request{label} <= {vs_http}x {HTTPPROXY}"
        r.target(name, fmt(fig, 2), *at_most(fig, vs_http))
        name = f"per request{label} <= {vs_rotating}x {ROTATING}"
        if rotating:
            fig = rotating[row]
            r.target(name, fmt(fig, 2), *at_most(fig, vs_rotating))
        else:
            r.target(name, "did not run", False)
    r.target(
        f"per-request ratio intervals' half-width <= {result['halfwidth_target']:.0%}",
        f"widest {result['widest_halfwidth']:.1%} after {result['rounds']} rounds",
        result["widest_halfwidth"] <= result["halfwidth_target"],
    )
    if not rotating:
        r.out(f"scrapy-rotating-proxies did not run: {result['rotating_error']}")
        r.out()
    smoke(r, result.get("rotating_crawl"))


def smoke(r: Report, crawl: dict[str, Any] | None) -> None:
    if not crawl:
        return
    if not crawl["ok"]:
        r.out(f"scrapy-rotating-proxies in a real crawl failed: {crawl['error']}")
        r.out()
        return
    kinds = sorted(
        w.split(":", 1)[1].split("(")[0].strip()
        for w in crawl["warnings"]
        if "requires a spider argument" in w
    )
    which = f", deprecations of the spider argument of {', '.join(kinds)}"
    r.out(
        f"scrapy-rotating-proxies in a real crawl on this Scrapy: "
        f"{crawl['pages']}/{crawl['expected']} pages; "
        f"{len(crawl['warnings'])} warning(s)" + (which if kinds else "") + "."
    )
    r.out()


def report_targets(r: Report) -> None:
    if not r.targets:  # sections with no target (instructions, say)
        return
    r.out("### Targets")
    r.out()
    r.table(
        ["target", "measured", "met", "whole interval meets it"],
        [
            [name, value, "yes" if met else "**no**", interval]
            for name, value, met, interval in r.targets
        ],
    )
