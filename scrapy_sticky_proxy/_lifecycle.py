"""The middleware's part in the crawl's life: the store opens with the
spider and closes after it, requests held at a gate are let go as soon as
the engine starts closing, the local counters reach the stats whenever they
are read, and a duplicate the scheduler dropped closes its ledger entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call

from ._stats import stats_wanted

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from ._stats import Counter
    from .ledger import Ledger
    from .routing.router import Router

STORE_UNAVAILABLE = "sticky_proxy_store_unavailable"
WATCH_INTERVAL = 1.0  # how often held requests check that the spider closes


class Lifecycle:
    def __init__(
        self,
        crawler: Crawler,
        router: Router,
        ledger: Ledger,
        count: Counter,
        close_spider: Callable[[str, str], None],
    ):
        self.crawler = crawler
        self.router = router
        self.store = router.store
        self.ledger = ledger
        self.count = count
        self.close_spider = close_spider
        self._watch = create_looping_call(self._watch_engine)
        connect = crawler.signals.connect
        connect(self.opened, signal=signals.spider_opened)
        connect(self.closed, signal=signals.spider_closed)
        connect(self.dropped, signal=signals.request_dropped)
        connect(self.flush, signal=stats_wanted)

    async def opened(self) -> None:
        self._watch.start(WATCH_INTERVAL, now=False)
        try:
            await self.store.open()
        except ConnectionError as exc:
            self.close_spider(STORE_UNAVAILABLE, str(exc))

    async def closed(self) -> None:
        self.router.stop()
        if self._watch.running:
            self._watch.stop()
        self.ledger.spider_closed()
        self.flush()
        await self.store.close()
        self.flush()  # what the store's last writes counted

    def dropped(self, request: Request) -> None:
        # A duplicate the scheduler dropped: Scrapy fetches that URL once.
        self.ledger.close(request.meta)

    def flush(self) -> None:
        self.count.flush(self.store)

    def _watch_engine(self) -> None:
        """Once a second: is the spider closing (CLOSESPIDER_*, a signal,
        another extension)? Scrapy has no signal for that, and the engine
        waits for the requests held at our gates before it closes."""
        engine = self.crawler.engine
        slot = getattr(engine, "_slot", None)
        if getattr(slot, "closing", None) is not None or getattr(
            engine, "_stopping", False
        ):
            self.router.stop()
