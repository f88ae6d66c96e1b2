"""A session's turns on its connection (STICKY_PROXY_CONNECTIONS_PER_SESSION)
in real crawls: they save connections, and must cost a crawl nothing else:
not its concurrency, not its download timeout, not its closing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import crawl
from .test_connections import _keeping
from .test_crawl import settings_for


class _Burst(Spider):
    """Fetches one page alone (the route's first answer opens its gate),
    then every (url, meta) of *urls* at once; records each outcome and the
    download handler."""

    name = "burst"

    def __init__(self, first: str, urls: list[tuple[str, dict[str, Any]]], **kw: Any):
        super().__init__(**kw)
        self.first, self.urls = first, urls
        self.outcomes: dict[str, str] = {}
        self.timeouts: dict[str, Any] = {}  # url -> meta["download_timeout"] after
        self.handler: Any = None

    async def start(self) -> AsyncIterator[Request]:
        yield Request(self.first, callback=self.burst, dont_filter=True)

    def burst(self, response: Any) -> Iterator[Request]:
        self.handler = self.crawler.engine.downloader.handlers._get_handler(
            response.url.partition(":")[0]
        )
        for url, meta in self.urls:
            yield Request(url, meta=dict(meta), errback=self.failed, dont_filter=True)

    def parse(self, response: Any) -> dict[str, Any]:
        self.outcomes[response.url] = str(response.status)
        return {"url": response.url}

    def failed(self, failure: Any) -> None:
        url = failure.request.url
        self.outcomes[url] = failure.getErrorMessage()
        self.timeouts[url] = failure.request.meta.get("download_timeout")


def _hang(paths: set[str]) -> Any:
    return lambda ip, path: "hang" if path in paths else None


@deferred_f_from_coro_f
async def test_a_key_many_requests_share_is_not_sent_one_at_a_time() -> None:
    """STICKY_PROXY_KEY = "host" makes a site one session. Its requests took
    turns on one connection, whatever CONCURRENT_REQUESTS_PER_DOMAIN said
    (the reviewer's run: 100 requests at 50 ms each, 5.6 s against 0.5 s,
    through 1 connection). Past two waiting, a request now goes at once."""
    with Sandbox(gateway_latency=(0.0, 0.05)) as sb:
        spider: list[Any] = []
        urls = [(f"{sb.site_url}/item/{i}", {}) for i in range(1, 64)]
        settings = settings_for(
            sb,
            STICKY_PROXY_KEY="host",
            CONCURRENT_REQUESTS=16,
            CONCURRENT_REQUESTS_PER_DOMAIN=16,
        )
        result = await crawl(
            _keeping(_Burst, spider), settings, first=f"{sb.site_url}/item/0", urls=urls
        )
        assert len(result.items) == 63
        assert sb.gateway.peak_connections >= 8, sb.gateway.peak_connections
        assert len({r.exit_ip for r in sb.gateway.log}) == 1  # one session: one exit
        turns = spider[0].handler.turns
        assert turns.overflowed > 0 and turns.keys == 0


@deferred_f_from_coro_f
async def test_a_wait_for_a_turn_comes_out_of_the_download_timeout() -> None:
    """Behind a hung request of its session, a request waited its whole
    DOWNLOAD_TIMEOUT for a turn, then got the whole timeout again for its
    download: it failed after twice the timeout. It now waits half at most
    and downloads in what is left; its retry's copy keeps the timeout it had."""
    timeout = 2.0
    with Sandbox() as sb:
        sb.site.ban_rule = _hang({"/item/1", "/item/1/detail"})
        meta = {"sticky_proxy_key": "item-1"}
        urls = [(f"{sb.site_url}/item/1{p}", meta) for p in ("/media", "/detail", "")]
        spider: list[Any] = []
        settings = settings_for(sb, DOWNLOAD_TIMEOUT=timeout, RETRY_ENABLED=False)
        await crawl(
            _keeping(_Burst, spider), settings, first=f"{sb.site_url}/item/0", urls=urls
        )
        outcomes, timeouts = spider[0].outcomes, spider[0].timeouts
        # The first of the two to leave hangs its whole timeout; the other
        # waits for its turn, then hangs for what is left (which one leaves
        # first is the scheduler's order, LIFO on current Scrapy).
        hung = [f"{sb.site_url}/item/1{p}" for p in ("", "/detail")]
        took = sorted(
            float(outcomes[u].split("longer than ")[1].split()[0]) for u in hung
        )
        assert 0 < took[0] <= timeout / 2 + 0.01 and took[1] <= timeout, outcomes
        assert [timeouts[u] for u in hung] == [timeout, timeout]  # restored
        assert outcomes[f"{sb.site_url}/item/1/media"] == "200"


@deferred_f_from_coro_f
async def test_requests_waiting_for_a_turn_go_when_the_spider_closes() -> None:
    """When the spider closes, requests waiting for a turn behind a hung
    request were held until their wait ran out (or served one at a time):
    they now go at once, let go by the closing."""
    with Sandbox() as sb:
        sb.site.ban_rule = _hang({"/item/1"})
        meta = {"sticky_proxy_key": "item-1"}
        urls = [(f"{sb.site_url}/item/1{p}", meta) for p in ("/media", "/detail", "")]
        urls.append((f"{sb.site_url}/item/2", {}))  # its item closes the spider
        spider: list[Any] = []
        settings = settings_for(
            sb, DOWNLOAD_TIMEOUT=6, RETRY_ENABLED=False, CLOSESPIDER_ITEMCOUNT=1
        )
        await crawl(
            _keeping(_Burst, spider), settings, first=f"{sb.site_url}/item/0", urls=urls
        )
        turns = spider[0].handler.turns
        assert (turns.timed_out, turns.let_go) == (0, 2)  # before: (2, 0)
        assert turns.closed
        assert spider[0].outcomes[f"{sb.site_url}/item/1/media"] == "200"
