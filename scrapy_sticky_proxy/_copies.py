"""Copies of a routed request: a retry on the same session, or a re-roll onto
a new one within the request's budget. Both go through Scrapy's
``get_retry_request`` and leave without their route and credentials (a copy
may be queued, even in Redis)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest

from . import _meta as M
from ._reroll import bound, number, restart, stamp
from .cache import bypass
from .config.readers import MAX_REROLLS, meta_count, whole_number
from .ledger import reasons
from .routing.decisions import CLOSING

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request
    from scrapy.crawler import Crawler

    from .config import StickyProxyConfig
    from .ledger import Ledger

logger = logging.getLogger("scrapy_sticky_proxy.middleware")


_ABSENT = object()  # no retry_times in meta


class Copies:
    def __init__(
        self,
        crawler: Crawler,
        config: StickyProxyConfig,
        ledger: Ledger,
        cache: bool,
    ):
        self.crawler = crawler
        self.config = config
        self.ledger = ledger
        self.cache = cache  # HTTPCACHE_ENABLED: copies go to the network

    def reroll(
        self,
        request: Request,
        reason: str,
        stat: str,
        renew: Callable[[Request], bool] = lambda request: False,
    ) -> Request:
        """A copy of *request* for a new session, or IgnoreRequest (recorded)
        once the request's re-roll budget is spent and *renew* does not
        start it again."""
        bound(request)  # a follow-up built from response.meta starts afresh
        meta = request.meta
        rerolls = int(min(number(meta.get(M.REROLLS), 0), MAX_REROLLS))
        why = [*reasons(request), reason]
        assert self.crawler.stats is not None
        limit = meta_count(
            request,
            M.MAX_REROLLS,
            default=self.config.max_rerolls,
            maximum=MAX_REROLLS,
            stats=self.crawler.stats,
            redact=self.config.redact,
        )
        spent = rerolls >= limit
        if spent and renew(request):  # (before the copy: it marks meta)
            spent, rerolls = False, 0
        # After a redirect, start again from the request the spider made.
        start = restart(request)
        if spent:
            self.ledger.give_up(start, why)
        new = self.retry(start, reason, stat)
        new.meta.pop(M.SOFT_RETRIED, None)
        new.meta.pop(M.TOLERATED, None)  # a new session spares it afresh
        new.meta[M.REROLLS] = rerolls + 1
        new.meta[M.REASONS] = why
        stamp(new)
        return new

    def requeue(self, request: Request, deadline: Any) -> Request:
        """The spider closes while *request* waits (an outage, a tolerated
        retry, a warm-up), and the scheduler keeps its queue for the next run
        (JOBDIR, SCHEDULER_PERSIST): a copy goes back to it, deadline
        included, instead of a record of a request the next run would never
        send. A warm-up request is dropped: it is not the scheduler's."""
        if M.WARMUP in request.meta:
            raise IgnoreRequest("a warm-up while the spider closes")
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("sticky_proxy/requeued")
        new = self.retry(request, CLOSING, "requeued")
        if deadline is not None:
            new.meta[M.NOT_BEFORE] = deadline
        return new

    def retry(self, request: Request, reason: str, stat: str) -> Request:
        """A copy of *request*, through get_retry_request, stripped of its
        route; stats under ``sticky_proxy/<stat>/``."""
        given = request.meta.get("retry_times", _ABSENT)
        # Untrusted: a count, or none spent (Scrapy's sum would raise).
        retry_times = None if given is _ABSENT else whole_number(given, 0, 2**31) or 0
        if given is not _ABSENT and retry_times != given:
            request = request.replace(meta={**request.meta, "retry_times": retry_times})
        spider = self.crawler.spider
        assert spider is not None
        new = get_retry_request(
            request,
            spider=spider,
            reason=reason,
            max_retry_times=(retry_times or 0) + 1,
            stats_base_key=f"sticky_proxy/{stat}",
            logger=logger,
        )
        assert new is not None
        # Re-rolls have their own budget: leave RetryMiddleware's untouched.
        if retry_times is None:
            del new.meta["retry_times"]
        else:
            new.meta["retry_times"] = retry_times
        strip_route(new)
        new.meta.pop(M.CACHE_HOP, None)  # the guard's, about this response only
        if self.cache:
            bypass(new.meta)  # to the network, not to the HTTP cache
        # The copy names the request from now on: if it is lost waiting in
        # the scheduler, its record holds the verdicts written to it.
        self.ledger.routed(new, new.meta)
        return new


def strip_route(request: Request) -> None:
    """Drop what the middleware and HttpProxyMiddleware put on a request, so
    its copy carries no credentials and gets a fresh route."""
    meta = request.meta
    for name in ("proxy", "_auth_proxy", M.ROUTE, M.PROBE, M.SESSION):
        meta.pop(name, None)
    if meta.pop(M.SLOT, None):
        meta.pop("download_slot", None)
    request.headers.pop(b"Proxy-Authorization", None)
