"""End to end: pages/s of real crawls of the sandbox demo site, as paired
ratios to a fixed-proxy baseline with 95 % confidence intervals, at loopback
and through a gateway far away.

Every crawl is a fresh ``python -m bench.crawl_once`` process. Design:

- **pairs**: each variant is measured in pairs, its crawl and a baseline
  crawl back to back, in alternating order (baseline first in one round,
  the variant first in the next, and the other way round for the next
  variant). Both processes are started and wait (Python and Scrapy loaded,
  spider open) before either is timed, and their crawls run in chunks of
  ``chunk_items`` items, alternating A B B A A B ..., one process idle
  while the other crawls: a slow moment of this shared machine then hits
  both halves of a pair alike. The ratio of a pair is pages/s(variant) /
  pages/s(its baseline), each over the sum of its chunks' spans;
- **rounds**: a round is one pair of every variant under every gateway
  condition; rounds are the units of the bootstrap;
- **figures**: a variant's ratio is the median of its per-pair ratios, with
  a 95 % percentile bootstrap interval over the rounds (2000 resamples,
  ``random.Random(16)``); so are the crawler's CPU per page (process CPU
  time over the crawl, not wall time) and the collector's part of it, the
  CPU ratio per pair, and the new client connections per page that the
  sandbox gateway accepted (counted in the sandbox process, reset before
  each crawl);
- **spread**: how noisy the run was, (max - min) / median of single
  crawls' pages/s and of each variant's per-pair ratios (what the pairing
  takes out);
- **how many**: rounds are added, from ``min_pairs``, until every ratio's
  interval has a half-width <= ``halfwidth`` of its value (or
  ``max_pairs``): the run says how many that took and how long it ran;
- **conditions**: ``loopback`` (the sandbox as it is) and ``latency``
  (the gateway waits 20 ms per new client connection and 5 ms per request:
  what a connection costs on a real network), each its own sandbox process.

Variants: ``memory`` and ``redis`` (the addon), ``sessions by hand`` (no
middleware of ours: the spider writes one session per item into
``meta["proxy"]``, with our download handler), and ``connection floor``
(the baseline's own crawl, a fixed proxy, nothing of ours, through a
second sandbox of the same condition whose gateway ends every client
connection after 4 requests, so that it opens the 0.25 new connections per
page that one session per item of 4 pages needs: what those connections
cost Scrapy by themselves). ``memory / floor`` is the memory ratio over
the floor's. Optional: ``memory on shared connections`` (the addon on
Scrapy's stock handler, which shares connections between sessions: unsafe
on a pinning gateway, a diagnostic).

    python -m bench.e2e [--items 500] [--chunk-items 100] [--min-pairs 8] \
        [--max-pairs 20] [--variants memory,redis,...] [--conditions loopback]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

from .common import ChunkedCrawl, crawl_command, redis_server, sandbox_process
from .crawl_once import PARTS_PER_ITEM
from .e2e_summary import BASELINE, FLOOR, summarize

STOCK = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
OURS = "scrapy_sticky_proxy.StickyProxyDownloadHandler"
SHARED = "memory on shared connections"
BY_HAND = "sessions by hand"
# The floor's gateway ends a connection after as many requests as one
# session per item sends: the item page and its follow-ups.
PAGES_PER_CONNECTION = PARTS_PER_ITEM
# name -> (crawl_once variant, extra arguments)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    BASELINE: ("baseline", []),
    "memory": ("memory", []),
    "redis": ("redis", []),
    BY_HAND: (
        "sessions",
        ["-s", "DOWNLOAD_HANDLERS=" + json.dumps({"http": OURS, "https": OURS})],
    ),
    FLOOR: ("baseline", []),
    SHARED: (
        "memory",
        ["-s", "DOWNLOAD_HANDLERS=" + json.dumps({"http": STOCK, "https": STOCK})],
    ),
}
DEFAULT_VARIANTS = ("memory", "redis", BY_HAND, FLOOR)
# condition -> the gateway's (per new connection, per request) waits, seconds
CONDITIONS: dict[str, tuple[float, float]] = {
    "loopback": (0.0, 0.0),
    "latency": (0.020, 0.005),
}


def variant_command(
    name: str, sandbox: Any, items: int, redis_url: str, namespace: str, *more: str
) -> list[str]:
    """The crawl command of the VARIANTS row *name*; a Redis row gets the
    server's URL and a namespace of its own."""
    variant, extra = VARIANTS[name]
    if variant == "redis":
        extra = [*extra, "--redis-url", redis_url, "--namespace", namespace]
    return crawl_command(variant, sandbox, items, *extra, *more)


def run(
    items: int = 500,
    chunk_items: int = 100,
    min_pairs: int = 8,
    max_pairs: int = 20,
    halfwidth: float = 0.03,
    redis_url: str | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    conditions: Sequence[str] = tuple(CONDITIONS),
    progress: Any = None,
    settings: Sequence[str] = (),
) -> dict[str, Any]:
    """*settings*: ``NAME=VALUE`` Scrapy settings for every crawl, the
    baseline's included."""
    unknown = {*variants} - {*VARIANTS} - {BASELINE} | {*conditions} - {*CONDITIONS}
    if unknown:
        raise ValueError(f"not a variant or condition here: {sorted(unknown)}")
    check_settings(settings)
    variants = [name for name in variants if name != BASELINE]  # always run
    started = time.monotonic()
    rounds: list[dict[str, dict[str, dict[str, Any]]]] = []
    summary: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(redis_url))
        # (condition, requests per connection) -> its sandbox process
        sandboxes = {
            (name, limit): stack.enter_context(
                sandbox_process(
                    items=items,
                    latency=CONDITIONS[name],
                    requests_per_connection=limit,
                )
            )
            for name in conditions
            for limit in ((0, PAGES_PER_CONNECTION) if FLOOR in variants else (0,))
        }
        serial = itertools.count()

        def sandbox_for(condition: str, name: str) -> Any:
            limit = PAGES_PER_CONNECTION if name == FLOOR else 0
            return sandboxes[condition, limit]

        def command(condition: str, name: str, size: int) -> list[str]:
            sandbox = sandbox_for(condition, name)
            namespace = f"bench:e2e:{next(serial)}"
            chunks = ["--chunks", str(max(1, size // chunk_items))]
            extra = [arg for setting in settings for arg in ("-s", setting)]
            return variant_command(name, sandbox, size, url, namespace, *chunks, *extra)

        def crawl(
            condition: str, names: Sequence[str], size: int = items
        ) -> list[dict[str, Any]]:
            """Crawls in alternating chunks (A B B A A B ...): every process is
            started and waiting first, so that no start-up comes between them."""
            crawls = [ChunkedCrawl(command(condition, name, size)) for name in names]
            connections = [0] * len(crawls)
            try:
                for one in crawls:
                    one.wait_ready()
                for chunk in range(max(1, size // chunk_items)):
                    order = list(range(len(crawls)))
                    for index in order if chunk % 2 == 0 else order[::-1]:
                        sandbox = sandbox_for(condition, names[index])
                        sandbox.ask("reset")
                        crawls[index].go()
                        stats = sandbox.ask("stats")
                        connections[index] += stats["connections_accepted"]
                results = []
                for one, count in zip(crawls, connections, strict=True):
                    result = one.result()
                    result["connections"] = count
                    result["connections_per_page"] = count / result["pages"]
                    results.append(result)
            finally:
                for one in crawls:
                    one.close()
            return results

        # One untimed crawl each: the first one after a sandbox started is slow.
        for condition in conditions:
            crawl(condition, [BASELINE], min(items, 100))
            if FLOOR in variants:
                crawl(condition, [FLOOR], min(items, 100))
        for number in range(max_pairs):
            rounds.append(
                {c: run_round(crawl, c, variants, number, progress) for c in conditions}
            )
            if len(rounds) < min_pairs:
                continue
            summary = summarize(rounds, variants, conditions)
            widest = summary["widest_halfwidth"]
            if progress:
                progress(f"e2e after {len(rounds)} rounds: widest {widest:.1%}")
            if widest <= halfwidth:
                break
    summary = summarize(rounds, variants, conditions)
    pages = rounds[0][conditions[0]][variants[0]]["baseline"]["pages"]
    return {
        **summary,
        "items": items,
        "chunk_items": chunk_items,
        "pages": pages,
        "pairs": len(rounds),
        "min_pairs": min_pairs,
        "max_pairs": max_pairs,
        "halfwidth_target": halfwidth,
        "crawls": 2 * len(rounds) * len(variants) * len(conditions),
        "seconds": time.monotonic() - started,
        "latency": {c: CONDITIONS[c] for c in conditions},
        "settings": list(settings),
        "rounds": rounds,
    }


# What makes a variant what it is: not to be set for every crawl.
VARIANT_SETTINGS = ("ADDONS", "DOWNLOAD_HANDLERS", "DOWNLOADER_MIDDLEWARES")


def check_settings(settings: Sequence[str]) -> None:
    for setting in settings:
        name, equals, _ = setting.partition("=")
        if not equals or not name:
            raise ValueError(f"a setting is NAME=VALUE, not {setting!r}")
        if name in VARIANT_SETTINGS or name.startswith(("STICKY_PROXY_", "ROTATING_")):
            raise ValueError(f"{name} is what a variant sets: not for every crawl")


def run_round(
    crawl: Any, condition: str, variants: Sequence[str], number: int, progress: Any
) -> dict[str, dict[str, Any]]:
    """One pair per variant; the order alternates between rounds and variants."""
    pairs = {}
    for index, name in enumerate(variants):
        variant_first = (number + index) % 2 == 1
        if variant_first:
            ours, base = crawl(condition, [name, BASELINE])
        else:
            base, ours = crawl(condition, [BASELINE, name])
        pairs[name] = {"baseline": base, "variant": ours, "first": variant_first}
        if progress:
            progress(
                f"e2e round {number + 1} {condition} {name}: "
                f"x{ours['pages_per_s'] / base['pages_per_s']:.3f} "
                f"({ours['pages_per_s']:.0f} / {base['pages_per_s']:.0f} pages/s, "
                f"{ours['connections_per_page']:.2f} connections/page)"
            )
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--chunk-items", type=int, default=100)
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=20)
    parser.add_argument("--halfwidth", type=float, default=0.03)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Scrapy setting for every crawl, the baseline's included",
    )
    args = parser.parse_args()
    try:
        check_settings(args.set)
    except ValueError as error:
        parser.error(str(error))
    from .e2e_report import print_result

    result = run(
        args.items,
        args.chunk_items,
        args.min_pairs,
        args.max_pairs,
        args.halfwidth,
        args.redis_url,
        variants=[v.strip() for v in args.variants.split(",") if v.strip()],
        conditions=[c.strip() for c in args.conditions.split(",") if c.strip()],
        progress=print,
        settings=args.set,
    )
    print_result(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()
