"""Spiders the crawl tests run against the sandbox's demo site."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urljoin

from scrapy import Request, Spider
from scrapy.http import Response

ITEM_PATH = re.compile(r"^/item/(\d+)(?:/(detail|media|thumb))?$")


class ItemsSpider(Spider):
    """Fetches /item/0 .. /item/{n-1}; each item page's three follow-ups are
    sent with the page's session key, so they must share its exit."""

    name = "items"

    def __init__(
        self,
        base: str,
        n: int,
        follow: bool = True,
        pass_key: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.base = base
        self.n = int(n)
        self.follow = follow
        self.pass_key = pass_key

    async def start(self) -> AsyncIterator[Any]:
        for i in range(self.n):
            yield Request(f"{self.base}/item/{i}", callback=self.parse_item)

    def parse_item(self, response: Response) -> Iterator[Any]:
        yield {
            "item": int(response.url.rsplit("/", 1)[1]),
            "part": "page",
            "exit": response.css("#client::text").get(),
            "session": response.meta["sticky_proxy_session"],
            "generation": response.meta["sticky_proxy_generation"],
        }
        if self.follow:
            meta = {"sticky_proxy_key": response.meta["sticky_proxy_key"]}
            for href in response.css("a.follow::attr(href)").getall():
                yield response.follow(
                    href, callback=self.parse_part, meta=meta if self.pass_key else {}
                )

    def parse_part(self, response: Response) -> dict[str, Any]:
        data = response.json()
        return {"item": data["item"], "part": data["part"], "exit": data["client"]}


def hooked(signal: object, handler: Callable[..., object]) -> type[ItemsSpider]:
    """An ItemsSpider whose crawl calls *handler* on every *signal*."""

    class Hooked(ItemsSpider):
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            crawler.signals.connect(handler, signal=signal, weak=False)
            return spider

    return Hooked


def at_counts(actions: dict[int, Callable[[], object]]) -> Callable[[], None]:
    """A signal handler that runs ``actions[n]`` on its n-th call."""
    calls = [0]

    def handler() -> None:
        calls[0] += 1
        if calls[0] in actions:
            actions[calls[0]]()

    return handler


def item_of(path: str) -> int | None:
    match = ITEM_PATH.match(path.split("?", 1)[0])
    return int(match.group(1)) if match else None


class IndexSpider(ItemsSpider):
    """The example project's crawl: the index page ``/?n=N``, each item it
    links to (through ``/r/{i}`` with ``redirects``), and each item page's
    three follow-ups with the page's session key.

    Keeps, by URL: what it requested (``requested``), which of those
    Scrapy scheduled (past the spider middlewares: depth, offsite) and
    which reached the downloader (past the downloader middlewares), and
    which were answered to a callback, by the URL it asked for (before
    redirects)."""

    name = "index"

    def __init__(self, base: str, n: int, redirects: bool = False, **kwargs: Any):
        super().__init__(base, n, **kwargs)
        self.redirects = redirects
        self.requested: set[str] = set()
        self.scheduled: set[str] = set()
        self.reached: set[str] = set()
        self.answered: set[str] = set()
        self.failures: list[tuple[str, str]] = []

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        from scrapy import signals

        spider = super().from_crawler(crawler, *args, **kwargs)
        connect = crawler.signals.connect
        connect(spider._seen(spider.scheduled), signals.request_scheduled, weak=False)
        reached = signals.request_reached_downloader
        connect(spider._seen(spider.reached), reached, weak=False)
        return spider

    @staticmethod
    def _seen(urls: set[str]) -> Callable[..., None]:
        return lambda request, **_: urls.add(request.url)

    def _ask(self, request: Request) -> Request:
        self.requested.add(request.url)
        return request.replace(errback=self.failed)

    def _answer(self, response: Response) -> None:
        redirects = response.meta.get("redirect_urls")
        self.answered.add(redirects[0] if redirects else response.url)

    async def start(self) -> AsyncIterator[Any]:
        yield self._ask(Request(f"{self.base}/?n={self.n}", callback=self.parse_index))

    def parse_index(self, response: Response) -> Iterator[Any]:
        self._answer(response)
        for href in response.css("a.item::attr(href)").getall():
            url = response.urljoin(href)
            if self.redirects:
                url = url.replace("/item/", "/r/")
            yield self._ask(Request(url, callback=self.parse_item))

    def parse_item(self, response: Response) -> Iterator[Any]:
        self._answer(response)
        for out in super().parse_item(response):
            yield self._ask(out) if isinstance(out, Request) else out

    def parse_part(self, response: Response) -> dict[str, Any]:
        self._answer(response)
        return super().parse_part(response)

    def failed(self, failure: Any) -> None:
        self.failures.append((failure.request.url, type(failure.value).__name__))


def warm_up(request: Request, session: Any) -> Request:
    """A STICKY_PROXY_WARMUP function: the demo site's /warmup page first."""
    return Request(urljoin(request.url, "/warmup"))
