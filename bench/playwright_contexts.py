"""Open browser contexts and memory in a long scrapy-playwright crawl.

``python -m bench.playwright_contexts [--items 500] [--max-contexts 16]``
crawls ``--items`` item pages in headless Chromium (Debian's
``/usr/bin/chromium``) through a pinning sandbox gateway with 20 % of exits
banned, each page with a browser follow-up and an HTTP one (the spider of
``tests/test_playwright.py``), and prints one JSON line: items, bans, the
peak of open contexts (ours and scrapy-playwright's own count), and the
peak memory of the crawl's process tree (this process, the Playwright
driver and every Chromium process), sampled from /proc every 0.2 s: the
sum of RSS (counts pages shared between Chromium's processes once per
process) and the sum of PSS (shares them out: the honest total).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction
from tests.test_playwright import BrowserItemsSpider, browser_settings


def _tree(root: int) -> list[int]:
    """*root* and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _memory_kib(pids: list[int]) -> tuple[int, int, int]:
    """(processes read, sum of RSS, sum of PSS), in KiB."""
    count = rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # exited meanwhile
            continue
        count += 1
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss += int(value.split()[0])
            elif name == "Pss":
                pss += int(value.split()[0])
    return count, rss, pss


class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.done = threading.Event()
        self.peak = {"processes": 0, "rss_kib": 0, "pss_kib": 0}

    def run(self) -> None:
        while not self.done.wait(self.interval):
            count, rss, pss = _memory_kib(_tree(os.getpid()))
            self.peak["processes"] = max(self.peak["processes"], count)
            self.peak["rss_kib"] = max(self.peak["rss_kib"], rss)
            self.peak["pss_kib"] = max(self.peak["pss_kib"], pss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--max-contexts", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with Sandbox(pin_per_connection=True, items=args.items) as sandbox:
        sandbox.site.ban_rule = ban_fraction(0.2, salt="bench")
        settings: dict[str, Any] = browser_settings(
            sandbox,
            STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS=args.max_contexts,
            CONCURRENT_REQUESTS=args.concurrency,
            CONCURRENT_REQUESTS_PER_DOMAIN=args.concurrency,
            CLOSESPIDER_TIMEOUT=1800,
            LOG_LEVEL="WARNING",
            TWISTED_REACTOR="twisted.internet.asyncioreactor.AsyncioSelectorReactor",
            ADDONS={"scrapy_sticky_proxy.Addon": 100},
            TELNETCONSOLE_ENABLED=False,
            STICKY_PROXY_LOG_INTERVAL=0,
        )
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(BrowserItemsSpider)
        sampler = Sampler()
        sampler.start()
        started = time.monotonic()
        process.crawl(crawler, base=sandbox.site_url, n=args.items)
        process.start()
        elapsed = time.monotonic() - started
        sampler.done.set()
        sampler.join()
        assert crawler.stats is not None
        stats = crawler.stats.get_stats()
        print(
            json.dumps(
                {
                    "items": args.items,
                    "concurrency": args.concurrency,
                    "max_contexts": args.max_contexts,
                    "seconds": round(elapsed, 1),
                    "finish_reason": stats.get("finish_reason"),
                    "scraped": stats.get("item_scraped_count", 0),
                    "bans": stats.get("sticky_proxy/bans", 0),
                    "gave_up": stats.get("sticky_proxy/gave_up", 0),
                    "failed": stats.get("sticky_proxy/failed", 0),
                    "contexts_opened": stats.get(
                        "sticky_proxy/browser_contexts/opened"
                    ),
                    "contexts_max_open": stats.get(
                        "sticky_proxy/browser_contexts/max_open"
                    ),
                    "playwright_max_concurrent_contexts": stats.get(
                        "playwright/context_count/max_concurrent"
                    ),
                    "closed": {
                        k.rsplit("/", 1)[1]: v
                        for k, v in stats.items()
                        if k.startswith("sticky_proxy/browser_contexts/closed/")
                    },
                    "peak_memory": {
                        "processes": sampler.peak["processes"],
                        "rss_mib": round(sampler.peak["rss_kib"] / 1024),
                        "pss_mib": round(sampler.peak["pss_kib"] / 1024),
                    },
                }
            )
        )


if __name__ == "__main__":
    main()
