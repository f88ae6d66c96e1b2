"""A progress line every STICKY_PROXY_LOG_INTERVAL seconds and a summary at
close, both built from the ``sticky_proxy/`` stats."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

from . import serializer
from ._stats import stats_wanted
from .config import for_crawler
from .config.readers import read_list

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)
PREFIX = "sticky_proxy/"


class StickyProxyStats:
    """The extension: a progress line every ``STICKY_PROXY_LOG_INTERVAL``
    seconds (``Sticky proxy: requests=... bans=... rerolls=...``) and a
    summary line at close, built from the ``sticky_proxy/`` stats.

    The addon installs it. Wired by hand, list it in ``EXTENSIONS``
    (``{"scrapy_sticky_proxy.StickyProxyStats": 500}``): it also tells the
    scrapy-redis queue serializer which request classes the crawl may
    rebuild (``STICKY_PROXY_SERIALIZER_CLASSES``). Off (``NotConfigured``)
    when ``STICKY_PROXY_ENABLED`` is False.
    """

    def __init__(self, crawler: Crawler):
        config = for_crawler(crawler)
        if not config.enabled:
            raise NotConfigured
        self.crawler = crawler
        # scrapy-redis calls the queue serializer without settings: it
        # learns here which request classes this crawl may rebuild.
        serializer.configure(
            config.serializer_classes, read_list(crawler.settings, "SPIDER_MODULES")
        )
        self._skipped_before = serializer.counts["skipped"]
        self.interval = config.log_interval
        self._task: Any = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyStats:
        return cls(crawler)

    def spider_opened(self) -> None:
        if self.interval > 0:
            self._task = create_looping_call(self.log_progress)
            self._task.start(self.interval, now=False)

    def spider_closed(self, reason: str) -> None:
        if self._task is not None and self._task.running:
            self._task.stop()
        self._flush_counters()
        logger.info("Sticky proxy summary (%s): %s", reason, self.summary())

    def log_progress(self) -> None:
        self._flush_counters()
        logger.info("Sticky proxy: %s", self.summary())

    def summary(self) -> str:
        assert self.crawler.stats is not None
        stats = self.crawler.stats.get_stats()
        value = {k[len(PREFIX) :]: v for k, v in stats.items() if k.startswith(PREFIX)}
        bans = ", ".join(
            f"{k[len('bans/') :]}={v}"
            for k, v in sorted(value.items())
            if k.startswith("bans/")
        )
        return (
            f"requests={value.get('requests', 0)} "
            f"tracked_keys={value.get('tracked_keys', 0)} "
            f"bans={value.get('bans', 0)}{f' ({bans})' if bans else ''} "
            f"rerolls={value.get('rerolls', 0)} "
            f"rotations={value.get('rotations', 0)} "
            f"gave_up={value.get('gave_up', 0)}"
            + (f" user_proxy={user}" if (user := value.get("user_proxy")) else "")
        )

    def _flush_counters(self) -> None:
        if skipped := serializer.counts["skipped"] - self._skipped_before:
            assert self.crawler.stats is not None
            self.crawler.stats.set_value(f"{PREFIX}serializer/skipped", skipped)

        self.crawler.signals.send_catch_log(signal=stats_wanted)
