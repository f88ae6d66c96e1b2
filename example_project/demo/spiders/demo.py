"""Each item page and its three follow-ups (detail, media, thumbnail) leave
through one exit; different items leave through different exits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy

from scrapy_sticky_proxy.sandbox import ban_fraction, embedded


class DemoSpider(scrapy.Spider):
    name = "demo"

    def __init__(self, start_url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.start_url = start_url
        self.exits: dict[str, set[str]] = {}

    async def start(self) -> AsyncIterator[Any]:
        url = self.start_url
        if url is None:
            sandbox = embedded()
            fraction = self.settings.getfloat("DEMO_BAN_FRACTION")
            sandbox.site.ban_rule = ban_fraction(fraction) if fraction else None
            url = f"{sandbox.site_url}/?n={self.settings.getint('DEMO_ITEMS', 50)}"
        yield scrapy.Request(url, callback=self.parse_index)

    def parse_index(self, response: scrapy.http.Response) -> Iterator[Any]:
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse_item)

    def parse_item(self, response: scrapy.http.Response) -> Iterator[Any]:
        client = response.css("#client::text").get()
        title = response.css("h1::text").get()
        self.exits.setdefault(response.url, set()).add(client or "?")
        yield {
            "url": response.url,
            "title": title,
            "exit": client,
            "session": response.meta["sticky_proxy_session"],
        }
        # Pass the key on: the follow-ups share the item's session and exit.
        key = response.meta["sticky_proxy_key"]
        for href in response.css("a.follow::attr(href)").getall():
            yield response.follow(
                href,
                callback=self.parse_part,
                meta={"sticky_proxy_key": key},
                cb_kwargs={"item_url": response.url},
            )

    def parse_part(self, response: scrapy.http.Response, item_url: str) -> Any:
        data = response.json()
        self.exits.setdefault(item_url, set()).add(data["client"])
        return {"url": response.url, "part": data["part"], "exit": data["client"]}

    def closed(self, reason: str) -> None:
        stats = self.crawler.stats.get_stats()
        exits = {e for group in self.exits.values() for e in group}
        split = sum(1 for group in self.exits.values() if len(group) > 1)
        print(
            f"\nDemo summary ({reason}): items={len(self.exits)} "
            f"distinct_exits={len(exits)} items_split_across_exits={split} "
            f"bans={stats.get('sticky_proxy/bans', 0)} "
            f"rerolls={stats.get('sticky_proxy/rerolls', 0)} "
            f"gave_up={stats.get('sticky_proxy/gave_up', 0)}"
        )
