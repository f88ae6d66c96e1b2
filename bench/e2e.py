"""End to end: pages/s of real crawls of the sandbox demo site, three ways.

Every crawl is a fresh ``python -m bench.crawl_once`` process against one
sandbox process, repetitions interleaved (A B C D A B C D ...) so that a
slow moment of the machine hits every variant alike. Reported: the median
pages/s of each variant and its ratio to the baseline's median, and the
crawler's CPU time per page (the crawl is bound by the crawler's core: the
sandbox runs on the other one).

Variants: ``baseline`` (fixed proxy, HttpProxyMiddleware only), ``memory``
and ``redis`` (the addon), and two diagnostic ones that separate what the
middleware costs from what sticky sessions cost whoever makes them:

- ``memory, shared connections``: the addon with Scrapy's stock download
  handler instead of ours, so keep-alive connections are shared between
  sessions as in the baseline (not a supported setup: a gateway that pins
  the exit per connection would mix exits);
- ``sessions by hand``: no middleware of ours, the spider writes one session
  per item into ``meta["proxy"]`` itself, with our download handler (one
  connection per session, as stickiness needs).

    python -m bench.e2e [--items 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import (
    crawl_command,
    median,
    redis_server,
    run_crawl,
    sandbox_process,
    spread,
)

STOCK = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
OURS = "scrapy_sticky_proxy.StickyProxyDownloadHandler"
SHARED = "memory, shared connections"
BY_HAND = "sessions by hand"
# name -> (crawl_once variant, extra arguments)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("baseline", []),
    "memory": ("memory", []),
    "redis": ("redis", []),
    SHARED: (
        "memory",
        ["-s", "DOWNLOAD_HANDLERS=" + json.dumps({"http": STOCK, "https": STOCK})],
    ),
    BY_HAND: (
        "sessions",
        ["-s", "DOWNLOAD_HANDLERS=" + json.dumps({"http": OURS, "https": OURS})],
    ),
}


def run(
    items: int = 500,
    repeat: int = 5,
    redis_url: str | None = None,
    variants: list[str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    names = variants or list(VARIANTS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with redis_server(redis_url) as url, sandbox_process(items=items) as sandbox:
        # One untimed crawl: the first one after the sandbox started is slow.
        run_crawl(crawl_command("baseline", sandbox, min(items, 100)))
        for rep in range(repeat):
            for name in names:
                variant, extra = VARIANTS[name]
                if variant == "redis":
                    extra = [*extra, "--redis-url", url]
                    extra += ["--namespace", f"bench:e2e:{rep}"]
                result = run_crawl(crawl_command(variant, sandbox, items, *extra))
                runs[name].append(result)
                if progress:
                    progress(
                        f"e2e {rep + 1}/{repeat} {name}: "
                        f"{result['pages_per_s']:.0f} pages/s"
                    )
    return summarize(runs, items)


def summarize(runs: dict[str, list[dict[str, Any]]], items: int) -> dict[str, Any]:
    rows = {}
    base = median([r["pages_per_s"] for r in runs["baseline"]])
    base_cpu = median([r["cpu_ms_per_page"] for r in runs["baseline"]])
    for name, results in runs.items():
        rates = [r["pages_per_s"] for r in results]
        cpu = [r["cpu_ms_per_page"] for r in results]
        rows[name] = {
            "pages_per_s": median(rates),
            "ratio": median(rates) / base,
            "spread": spread(rates),
            "cpu_ms_per_page": median(cpu),
            "cpu_ratio": median(cpu) / base_cpu,
            "runs": rates,
        }
    pages = runs["baseline"][0]["pages"] if runs["baseline"] else 0
    return {"items": items, "pages": pages, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    result = run(args.items, args.repeat, args.redis_url, progress=print)
    for name, row in result["rows"].items():
        print(
            f"{name:28} {row['pages_per_s']:7.1f} pages/s x{row['ratio']:.3f}"
            f"  {row['cpu_ms_per_page']:.3f} ms CPU/page"
            f"  (spread {row['spread']:.0%})"
        )


if __name__ == "__main__":
    main()
