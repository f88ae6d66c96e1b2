"""Redis traffic: commands per healthy request and per ban, and how fast a ban
reaches another process.

Counted by the server (INFO commandstats, reset before each crawl), in real
crawls with the Redis backend (``python -m bench.crawl_once --variant redis
--commandstats``), which snapshots the counters at its first response, at
its 100th and at its last, and after the spider closed:

- healthy: a crawl of the non-banning sandbox; commands per request between
  the 100th and the last response, and the whole crawl's start-up and close;
- bans: the same crawl against a sandbox that bans a fifth of the exits
  (403, 429, captcha); commands from the first to the last response divided
  by the bans the crawl counted. Commands that Lua scripts run (GET, SET,
  INCR, PUBLISH inside the compare-and-increment) are counted by Redis as
  well and shown apart from the calls the client sent.

The INFO calls of the snapshots themselves are left out. Propagation reuses
``bench.propagation`` (a ban in one process until another process's local
view has it).

    python -m bench.redis_traffic [--items 300] [--bans 500]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .common import (
    crawl_command,
    median,
    percentile,
    redis_server,
    run_crawl,
    sandbox_process,
)

# What the snapshots cost, and commands Redis counts inside scripts.
IGNORED = {"info", "config"}
IN_SCRIPTS = {"get", "set", "incr", "publish", "expire"}
BAN_PATTERNS = ["-s", 'STICKY_PROXY_BAN_PATTERNS=["g-recaptcha"]']


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {
        name: count - before.get(name, 0)
        for name, count in after.items()
        if name not in IGNORED
    }
    return {name: count for name, count in out.items() if count}


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def crawl(sandbox: Any, url: str, items: int, namespace: str, *extra: str) -> Any:
    command = crawl_command(
        "redis",
        sandbox,
        items,
        "--redis-url",
        url,
        "--namespace",
        namespace,
        "--commandstats",
        *extra,
    )
    return run_crawl(command)


def run(
    items: int = 300,
    bans: int = 500,
    redis_url: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    from .propagation import measure

    with redis_server(redis_url) as url:
        with sandbox_process(items=items) as sandbox:
            healthy = crawl(sandbox, url, items, "bench:traffic:healthy")
        counts = healthy["redis"]
        last = str(healthy["expected"])
        steady = delta(counts[last], counts["100"])
        startup = delta(counts["1"], {})
        whole = delta(counts["closed"], {})
        if progress:
            progress(f"redis traffic healthy: {whole}")
        with sandbox_process(items=items, ban_fraction=0.2) as sandbox:
            banned = crawl(sandbox, url, items, "bench:traffic:bans", *BAN_PATTERNS)
        counts = banned["redis"]
        during = delta(counts[str(banned["expected"])], counts["1"])
        if progress:
            progress(f"redis traffic bans ({banned['bans']}): {during}")
        delays = asyncio.run(measure(url, bans))
    ms = [d * 1000 for d in delays]
    client = {n: c for n, c in during.items() if n not in IN_SCRIPTS}
    scripted = {n: c for n, c in during.items() if n in IN_SCRIPTS}
    return {
        "healthy": {
            "requests": healthy["expected"] - 100,
            "commands": total(steady),
            "per_request": total(steady) / (healthy["expected"] - 100),
            "startup": startup,
            "whole_crawl": whole,
            "pages": healthy["pages"],
        },
        "bans": {
            "bans": banned["bans"],
            "client": client,
            "scripted": scripted,
            "per_ban": total(client) / max(1, banned["bans"]),
            "per_ban_scripted": total(scripted) / max(1, banned["bans"]),
        },
        "propagation": {
            "count": bans,
            "median_ms": median(ms),
            "p99_ms": percentile(ms, 0.99),
            "max_ms": max(ms),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--bans", type=int, default=500)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    result = run(args.items, args.bans, args.redis_url, progress=print)
    healthy, bans, prop = result["healthy"], result["bans"], result["propagation"]
    print(
        f"healthy: {healthy['per_request']:.3f} commands/request "
        f"({healthy['commands']} in {healthy['requests']} requests); "
        f"start-up {healthy['startup']}; whole crawl {healthy['whole_crawl']}"
    )
    print(
        f"bans: {bans['per_ban']:.2f} client commands/ban {bans['client']}, "
        f"+{bans['per_ban_scripted']:.2f} inside scripts {bans['scripted']}"
    )
    print(
        f"propagation: median {prop['median_ms']:.2f} ms, p99 {prop['p99_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
