"""The middleware's part in the crawl's life: the store opens with the
spider and closes after it, requests held at a gate are let go as soon as
the engine starts closing, the local counters reach the stats whenever they
are read, a duplicate the scheduler dropped closes its ledger entry, and
with ``JOBDIR`` the memory store's state is read back at the start of a run
and written at its end (:mod:`.state.snapshot`), with the tier of each site
above tier 1 (STICKY_PROXY_TIERS)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.job import job_dir

from ._connections import crawl_closing
from ._stats import stats_wanted
from .ledger import persistent
from .state import snapshot
from .state.memory import MemoryStore

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from ._stats import Counter
    from ._tiers import TieredRouter
    from .ledger import Ledger
    from .routing.router import Router
    from .routing.tiers import SiteTiers

logger = logging.getLogger(__name__)

STORE_UNAVAILABLE = "sticky_proxy_store_unavailable"
WATCH_INTERVAL = 1.0  # how often held requests check that the spider closes


class Lifecycle:
    def __init__(
        self,
        crawler: Crawler,
        router: Router | TieredRouter,
        ledger: Ledger,
        count: Counter,
        close_spider: Callable[[str, str], None],
        *,
        sites: SiteTiers | None = None,
    ):
        self.crawler = crawler
        self.router = router
        self.sites = sites  # STICKY_PROXY_TIERS: the tier of each site
        self.store = router.store
        self.ledger = ledger
        self.count = count
        self.close_spider = close_spider
        # The redis backend keeps its state in Redis: nothing to write.
        directory = job_dir(crawler.settings)
        self.state_file = None
        if directory and isinstance(self.store, MemoryStore):
            self.state_file = os.path.join(directory, snapshot.FILENAME)
        self._watch = create_looping_call(self._watch_engine)
        self._closing_said = False
        connect = crawler.signals.connect
        connect(self.opened, signal=signals.spider_opened)
        connect(self.closed, signal=signals.spider_closed)
        connect(self.ledger.dropped, signal=signals.request_dropped)
        if persistent(crawler):
            # A scheduled request is the queue's (JOBDIR's disk, Redis): it
            # may wait there past this run, or another process may take it
            # (scrapy-redis). Held here, it stayed in memory, never closed
            # when another process took it (1,353 in a run of two crawlers):
            # let go of it. What is still open at the close is lost: recorded.
            connect(self.ledger.queued, signal=signals.request_scheduled)
        connect(self.flush, signal=stats_wanted)

    async def opened(self) -> None:
        self._watch.start(WATCH_INTERVAL, now=False)
        if self.state_file is not None:
            self._restore(self.state_file)
        try:
            await self.store.open()
        except ConnectionError as exc:
            self.close_spider(STORE_UNAVAILABLE, str(exc))

    async def closed(self) -> None:
        self.router.stop()
        if self._watch.running:
            self._watch.stop()
        try:
            self.ledger.spider_closed()
        finally:  # the state is saved and the store closed whatever happened
            if self.state_file is not None:
                self._save(self.state_file)
            self.flush()
            await self.store.close()
            self.flush()  # what the store's last writes counted

    def flush(self) -> None:
        self.count.flush(self.store)

    def _scope(self) -> str:
        """What the store's generations are valid for."""
        config = self.router.config
        routes = [p.id for p in config.static_proxies]
        if config.gateway is not None:
            routes.append(config.gateway.hostport)
        routes += [route for tier in config.tiers[1:] for route in tier.routes]
        return snapshot.scope_of(config.namespace, config.provider.name, *routes)

    def _restore(self, path: str) -> None:
        assert isinstance(self.store, MemoryStore)
        loaded = snapshot.load(path, self._scope(), self.store.max_keys, time.time())
        if loaded is None:
            return
        if loaded.problem is not None:
            logger.warning(
                "The sticky proxy state %s %s: this run starts without it",
                path,
                loaded.problem,
            )
            self.count.inc("jobdir/rejected")
            return
        if loaded.skipped:
            logger.warning(
                "%d entries of the sticky proxy state %s failed their checks "
                "or were past STICKY_PROXY_MAX_KEYS: left out",
                loaded.skipped,
                path,
            )
            self.count.inc("jobdir/skipped", loaded.skipped)
        restored = self.store.restore(loaded.keys, self.router.clock(), loaded.paused)
        self.count.inc("jobdir/restored_keys", restored)
        logger.info("Restored the state of %d session keys from %s", restored, path)
        if self.sites is not None and loaded.tiers:
            for site, tier, since in loaded.tiers:  # the pause counts as quiet
                self.sites.learn(site, tier, since)
            self.count.inc("jobdir/restored_tiers", len(loaded.tiers))

    def _save(self, path: str) -> None:
        assert isinstance(self.store, MemoryStore)
        keys = self.store.export(self.router.clock())
        try:
            tiers = [] if self.sites is None else self.sites.export()
            saved = snapshot.save(path, keys, self._scope(), time.time(), tiers)
        except OSError as exc:
            logger.error(
                "Could not write the sticky proxy state %s (%s): the previous "
                "one, if any, is kept",
                path,
                exc.strerror or type(exc).__name__,
            )
            self.count.inc("jobdir/write_errors")
            return
        self.count.inc("jobdir/saved_keys", saved)

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
            if not self._closing_said:
                self._closing_said = True
                self.crawler.signals.send_catch_log(crawl_closing)
