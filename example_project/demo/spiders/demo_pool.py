"""A pool of 4 warmed-up sessions for the whole site, instead of a session
per item page.

The demo site bans (403) every request that does not carry the cookie its
``/warmup`` page set for the same exit address. Each session of the pool
fetches ``/warmup`` first (``STICKY_PROXY_WARMUP``); its cookie stays in
the session's jar and goes out with every later request of that session.
Each session is its own download slot, one request at a time.

    scrapy crawl demo_pool
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar
from urllib.parse import urljoin

import scrapy

from scrapy_sticky_proxy.sandbox import embedded, warmup_required


def warm_up(request: scrapy.Request, session: Any) -> scrapy.Request:
    """The landing page that sets the site's cookie for this exit."""
    return scrapy.Request(urljoin(request.url, "/warmup"))


class DemoPoolSpider(scrapy.Spider):
    name = "demo_pool"
    custom_settings: ClassVar[dict[str, Any]] = {
        "STICKY_PROXY_SESSION_POOL": "host",  # one pool per site...
        "STICKY_PROXY_SESSION_POOL_SIZE": 4,  # ... of 4 sessions
        "STICKY_PROXY_SESSION_SLOTS": True,  # each one request at a time
        "STICKY_PROXY_WARMUP": "demo.spiders.demo_pool.warm_up",
        "FEEDS": {"items_pool.jsonl": {"format": "jsonlines", "overwrite": True}},
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.exits: set[str] = set()

    async def start(self) -> AsyncIterator[Any]:
        sandbox = embedded()
        sandbox.site.ban_rule = warmup_required()
        items = self.settings.getint("DEMO_ITEMS", 50)
        yield scrapy.Request(f"{sandbox.site_url}/?n={items}", callback=self.parse)

    def parse(self, response: scrapy.http.Response) -> Iterator[Any]:
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse_item)

    def parse_item(self, response: scrapy.http.Response) -> Any:
        client = response.css("#client::text").get() or "?"
        self.exits.add(client)
        return {"url": response.url, "exit": client}

    def closed(self, reason: str) -> None:
        stats = self.crawler.stats.get_stats()
        print(
            f"\nPool summary ({reason}): items={stats.get('item_scraped_count', 0)} "
            f"distinct_exits={len(self.exits)} "
            f"warmups={stats.get('sticky_proxy/warmup/succeeded', 0)} "
            f"bans={stats.get('sticky_proxy/bans', 0)} "
            f"gave_up={stats.get('sticky_proxy/gave_up', 0)}"
        )
