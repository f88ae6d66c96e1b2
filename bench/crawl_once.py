"""One crawl of the sandbox demo site, in this process; prints one JSON line.

Scrapy's reactor cannot be restarted inside a process, so every crawl of the
end-to-end and scale-out benchmarks is one run of this module in a fresh
interpreter (``python -m bench.crawl_once ...``), against a sandbox that
runs in a process of its own.

The spider fetches ``/item/{i}`` for ``first <= i < first + items`` and the
three follow-ups each item page links to (``/detail``, ``/media``,
``/thumb``): ``4 * items`` pages. Variants:

- ``baseline``: every request carries ``meta["proxy"]`` = the gateway URL
  itself (one fixed session), Scrapy's HttpProxyMiddleware and stock download
  handler, nothing of this package;
- ``memory``: the addon, the follow-ups carry their page's session key;
- ``redis``: the same with ``STICKY_PROXY_BACKEND = "redis"``;
- ``sessions`` (diagnostic): no middleware of ours, the spider writes one
  session per item into ``meta["proxy"]`` itself;
- ``rotating``: scrapy-rotating-proxies with the gateway as its one proxy
  (does it still run on this Scrapy?).

The warnings the crawl raised (deprecations, say) are in the result.

The clock runs from the first start request to the last response (Python
start-up, reactor start, Redis connection and spider close are outside it),
on ``time.time()`` so that two processes can be put on one time line; CPU
time (``time.process_time()``, all threads) over the same span, and the
part of it spent in Python's cyclic garbage collector (``gc.callbacks``:
the thread's CPU time between each collection's start and stop).

Also: ``--profile FILE`` profiles the crawl with pyinstrument (a text tree,
or a session to open with ``pyinstrument --load FILE`` when FILE ends in
``.pyisession``); ``--commandstats`` snapshots Redis INFO commandstats;
``--wait-go`` prints ``ready`` and waits for a line on stdin to start.
``--chunks K`` crawls the items in K chunks, each started by a line on stdin
once the crawl is running (``ready`` is printed when the spider waits for
the first), each printing a JSON line of its own (its clocks and pages);
the final result sums the chunks' spans. Two such processes, chunks
alternating, are a pair measured at the same moments of a noisy machine.

    python -m bench.crawl_once --variant memory --gateway URL --site URL \
        --items 1000 --profile crawl.pyisession
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

VARIANTS = ("baseline", "sessions", "memory", "redis", "rotating")
ROTATING = {
    "rotating_proxies.middlewares.RotatingProxyMiddleware": 610,
    "rotating_proxies.middlewares.BanDetectionMiddleware": 620,
}
PARTS_PER_ITEM = 4  # the item page and its three follow-ups


class CollectorClock:
    """The CPU seconds spent in Python's cyclic garbage collector, in all (the
    collecting thread's CPU time, so that a wait for a core of this shared
    machine in the middle of a collection is not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started


class Probe:
    """Counts responses and takes the clocks at both ends of the crawl."""

    def __init__(self, expected: int, chunks: int = 0):
        self.expected = expected
        self.responses = 0
        self.ok = 0
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.collector = CollectorClock()
        gc.callbacks.append(self.collector)
        self.gc0 = self.gc1 = 0.0
        self.chunks = chunks
        self.spans: list[dict[str, float]] = []  # one per chunk, with --chunks
        self.hook: Any = None  # called with the response count, e.g. for Redis
        self.profiler: Any = None  # a pyinstrument Profiler, with --profile

    def start(self) -> None:
        if self.profiler is not None:
            self.profiler.start()
        self.t0 = time.time()
        self.cpu0 = time.process_time()
        self.gc0 = self.collector.seconds

    def response_received(self, response: Any, request: Any, spider: Any) -> None:
        self.responses += 1
        if response.status == 200:
            self.ok += 1
        self.t1 = time.time()
        self.cpu1 = time.process_time()
        self.gc1 = self.collector.seconds
        if self.hook is not None:
            self.hook(self.responses)
        if self.chunks and self.responses == (
            self.expected // self.chunks * (len(self.spans) + 1)
        ):
            span = {
                "chunk": len(self.spans),
                "t0": self.t0,
                "t1": self.t1,
                "cpu_s": self.cpu1 - self.cpu0,
                "gc_s": self.gc1 - self.gc0,
                "ok": self.ok - sum(s["ok"] for s in self.spans),
            }
            self.spans.append(span)
            sys.stdout.write(json.dumps(span) + "\n")
            sys.stdout.flush()

    def seconds(self) -> tuple[float, float, float]:
        """Wall, CPU and collector seconds measured: the crawl, or the sum of
        its chunks."""
        if not self.spans:
            return self.t1 - self.t0, self.cpu1 - self.cpu0, self.gc1 - self.gc0
        wall = sum(s["t1"] - s["t0"] for s in self.spans)
        cpu = sum(s["cpu_s"] for s in self.spans)
        return wall, cpu, sum(s["gc_s"] for s in self.spans)


async def next_line() -> bool:
    """Wait (in a thread) for a line on stdin; False once it is closed."""
    return bool(await asyncio.to_thread(sys.stdin.readline))


def make_spider_class() -> type:
    from scrapy import Request, Spider

    class BenchSpider(Spider):
        name = "bench"

        def __init__(
            self,
            base: str,
            first: int,
            items: int,
            probe: Probe,
            proxy: str | None = None,
            **kwargs: Any,
        ):
            super().__init__(**kwargs)
            self.base = base
            self.first = first
            self.items = items
            self.probe = probe
            self.proxy = proxy

        def _meta(self, key: str | None = None) -> dict[str, Any]:
            if self.proxy is None:
                return {"sticky_proxy_key": key} if key else {}
            if "{session}" not in self.proxy:
                return {"proxy": self.proxy}
            # One session per item, written by hand into the proxy URL.
            return {
                "proxy": self.proxy.replace("{session}", str(key)),
                "bench_key": key,
            }

        async def start(self) -> AsyncIterator[Any]:
            chunks = max(1, self.probe.chunks)
            size = self.items // chunks
            for chunk in range(chunks):
                if self.probe.chunks:  # each chunk waits for its "go"
                    if chunk == 0:
                        sys.stdout.write("ready\n")
                        sys.stdout.flush()
                    if not await next_line():
                        return  # the parent is gone
                self.probe.start()
                first = self.first + chunk * size
                for i in range(first, first + size):
                    yield Request(
                        f"{self.base}/item/{i}",
                        callback=self.parse_item,
                        meta=self._meta(f"i{i}") if self.proxy else {},
                    )

        def parse_item(self, response: Any) -> Iterator[Any]:
            meta = self._meta(
                response.meta.get("bench_key") or response.meta.get("sticky_proxy_key")
            )
            for href in response.css("a.follow::attr(href)").getall():
                yield response.follow(href, callback=self.parse_part, meta=meta)

        def parse_part(self, response: Any) -> None:
            response.json()

    return BenchSpider


def settings_for(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "LOG_LEVEL": args.log_level,
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "DOWNLOAD_TIMEOUT": 30,
        "ROBOTSTXT_OBEY": False,
    }
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = json.loads(value) if value.startswith(("[", "{")) else value
    if args.variant in ("baseline", "sessions"):
        return settings
    if args.variant == "rotating":
        settings["DOWNLOADER_MIDDLEWARES"] = ROTATING
        settings["ROTATING_PROXY_LIST"] = [args.gateway]
        return settings
    settings.update(
        {
            "ADDONS": {"scrapy_sticky_proxy.Addon": 100},
            "STICKY_PROXY_PROVIDER": "sandbox",
            "STICKY_PROXY_URL": args.gateway,
        }
    )
    if args.variant == "redis":
        settings.update(
            {
                "STICKY_PROXY_BACKEND": "redis",
                "STICKY_PROXY_REDIS_URL": args.redis_url,
                "STICKY_PROXY_NAMESPACE": args.namespace,
            }
        )
    return settings


def proxy_for(args: argparse.Namespace) -> str | None:
    """The spider's own meta["proxy"]: the gateway URL (baseline), or a
    template with one session per item (sessions), or none (ours)."""
    if args.variant == "baseline":
        return str(args.gateway)
    if args.variant == "sessions":
        parts = urlsplit(args.gateway)
        user, _, rest = parts.netloc.partition(":")
        netloc = f"{user}-session-{{session}}:{rest}"
        return urlunsplit(parts._replace(netloc=netloc))
    return None


def command_counts(client: Any) -> dict[str, int]:
    """Redis INFO commandstats as {command: calls}."""
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in client.info("commandstats").items()
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess

    chunks = max(1, args.chunks)
    expected = args.items // chunks * chunks * PARTS_PER_ITEM
    probe = Probe(expected, args.chunks)
    redis_counts: dict[str, dict[str, int]] = {}
    client = None
    if args.commandstats:
        # Snapshots of the server's command counters at the first request,
        # at response --mark and at the last response: what the crawl cost
        # Redis at start-up, and per request afterwards. INFO itself is
        # counted by Redis; the reader leaves it out.
        import redis

        client = redis.Redis.from_url(args.redis_url)
        # Reset from this connection, once it is made: its own handshake
        # then stays out of the counts.
        client.config_resetstat()

        def hook(count: int) -> None:
            if count in (1, args.mark, expected):
                redis_counts[str(count)] = command_counts(client)

        probe.hook = hook

    process = CrawlerProcess(settings_for(args))
    # Scrapy sends warnings to its log; record them for the result too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crawler = process.create_crawler(make_spider_class())
        crawler.signals.connect(
            probe.response_received, signal=signals.response_received
        )
        process.crawl(
            crawler,
            base=args.site,
            first=args.first,
            items=args.items,
            probe=probe,
            proxy=proxy_for(args),
        )
        if args.wait_go and not args.chunks:
            # Everything is imported and built: tell the parent, and start
            # when it says so (two processes then start their crawls together).
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            sys.stdin.readline()
        if args.profile:
            from pyinstrument import Profiler

            probe.profiler = Profiler(interval=0.001, async_mode="disabled")
        process.start()
    if probe.profiler is not None:
        probe.profiler.stop()
        session = probe.profiler.last_session
        if args.profile.endswith(".pyisession"):
            session.save(args.profile)
        else:
            with open(args.profile, "w", encoding="utf-8") as out:
                out.write(probe.profiler.output_text(unicode=True, show_all=False))
    if client is not None:
        redis_counts["closed"] = command_counts(client)
        client.close()
    assert crawler.stats is not None
    stats = crawler.stats.get_stats()
    seconds, cpu, collector = probe.seconds()
    return {
        "variant": args.variant,
        "pages": probe.ok,
        "expected": expected,
        "responses": probe.responses,
        "seconds": seconds,
        "pages_per_s": probe.ok / seconds if seconds > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_ms_per_page": 1000 * cpu / probe.ok if probe.ok else 0.0,
        "gc_ms_per_page": 1000 * collector / probe.ok if probe.ok else 0.0,
        "t0": probe.t0,
        "t1": probe.t1,
        "chunks": probe.spans,
        "finish_reason": stats.get("finish_reason"),
        "sticky_requests": stats.get("sticky_proxy/requests", 0),
        "bans": stats.get("sticky_proxy/bans", 0),
        "errors": stats.get("log_count/ERROR", 0),
        "redis": redis_counts,
        "warnings": sorted(
            {f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught}
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--gateway", required=True, help="sandbox gateway URL")
    parser.add_argument("--site", required=True, help="sandbox site URL")
    parser.add_argument("--items", type=int, default=250)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--namespace", default="bench:crawl")
    parser.add_argument("--commandstats", action="store_true")
    parser.add_argument("--mark", type=int, default=100)
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--chunks", type=int, default=0, help="0: not chunked")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra Scrapy setting (JSON for lists and dicts)",
    )
    parser.add_argument(
        "--profile", default=None, help="write a pyinstrument profile to this file"
    )
    args = parser.parse_args(argv)
    if args.variant == "redis" and not args.redis_url:
        parser.error("--variant redis needs --redis-url")
    return args


def main(argv: list[str] | None = None) -> None:
    result = run(parse_args(argv))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
