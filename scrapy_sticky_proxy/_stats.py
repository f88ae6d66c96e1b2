"""The package's counters: every ``sticky_proxy/<name>`` stat goes through
:class:`Counter`, and :data:`stats_wanted` asks for the ones kept locally."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.statscollectors import StatsCollector

    from .state.store import HealthStore

logger = logging.getLogger("scrapy_sticky_proxy.middleware")

PREFIX = "sticky_proxy/"

#: Sent when the ``sticky_proxy/`` stats are about to be read (the progress
#: line, the summary at close): counters kept locally are written now.
stats_wanted = object()


class Counter:
    def __init__(self, stats: StatsCollector | None):
        assert stats is not None
        self._stats = stats
        # Counted here and written by flush(): a stats call per request
        # costs more than the rest of a healthy request's routing
        # (bench/per_request.py).
        self.requests = 0
        self.user_proxy = 0  # left alone: the user set meta["proxy"]

    def inc(self, name: str, count: int = 1) -> None:
        self._stats.inc_value(PREFIX + name, count)

    def user_proxied(self, url: str, redact: Callable[[str], str]) -> None:
        """A request with meta["proxy"] set by the user: counted, said once."""
        self.user_proxy += 1
        if self.user_proxy == 1:
            # Not the proxy itself: the user's URL may hold a password.
            logger.info(
                "A request carries its own meta['proxy'] (%s): left alone, "
                "not routed, no session. Requests like it are counted in "
                "sticky_proxy/user_proxy and in the close summary",
                redact(url),
            )

    def flush(self, store: HealthStore) -> None:
        """Write the counters kept locally (here and in *store*)."""
        self._stats.set_value(PREFIX + "requests", self.requests)
        if self.user_proxy:
            self._stats.set_value(PREFIX + "user_proxy", self.user_proxy)
        self._stats.set_value(PREFIX + "tracked_keys", len(store))
        for name, count in store.counters().items():
            if count:
                self._stats.set_value(PREFIX + name, count)
