"""The downloader middleware: the Scrapy adapter of the router.

Meta in, the router's decision applied (``meta["proxy"]``, the session id,
the download slot), responses and download errors turned into the router's
events, copies made through ``get_retry_request`` (:mod:`._copies`), and
requests that will not reach the spider recorded (:mod:`.ledger`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler

from . import _meta as M
from ._copies import Copies
from ._reroll import bound, number, passed, stamp
from ._signals import stats_wanted
from ._waits import Waits
from ._wiring import Bypass, check_handlers, check_middleware_order
from .bans import TIMEOUTS, UNREACHABLE, BanPolicy, is_tunnel_407
from .cache import check_guard, restore
from .config import for_crawler
from .ledger import Ledger, reasons
from .routing.router import Decision, Held, Router
from .state.backends import make_store

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .state.store import HealthStore


logger = logging.getLogger(__name__)

AUTH_FAILED = "sticky_proxy_auth_failed"
STORE_UNAVAILABLE = "sticky_proxy_store_unavailable"
WATCH_INTERVAL = 1.0  # how often held requests check that the spider closes


class StickyProxyMiddleware:
    """Sets ``meta["proxy"]`` to a per-key session of the configured gateway
    (or a static proxy), and re-rolls banned requests onto a new session."""

    def __init__(self, crawler: Crawler, store: HealthStore | None = None):
        config = for_crawler(crawler)
        if not config.enabled:
            raise NotConfigured("STICKY_PROXY_ENABLED is False")
        settings = crawler.settings
        check_middleware_order(settings)
        self._bypass = Bypass(check_handlers(settings), self._inc)
        self.crawler = crawler
        self.config = config
        self.stats = crawler.stats
        if store is None:
            store = make_store(config, getattr(crawler.spider, "name", "") or "")
        self.policy: BanPolicy = (
            build_from_crawler(config.ban_policy_cls, crawler)
            if config.ban_policy_cls
            else BanPolicy.from_config(config)
        )
        self.download_timeout = settings.getfloat("DOWNLOAD_TIMEOUT")
        self._waits = Waits()
        self.router = Router(config, store, wake=self._waits.wake)
        self.store = store
        self.pool = self.router.pool
        self.ledger = Ledger(crawler, store, config.redact, self._inc)
        self.copies = Copies(crawler, config, self.ledger, check_guard(settings))
        self._closing = False  # we asked the engine to close the spider
        self._watch = create_looping_call(self._watch_engine)
        # Counted here and written to the stats by flush_stats() (progress
        # line, close): a stats call per request costs more than the rest of
        # a healthy request's routing (bench/per_request.py).
        self._requests = 0
        connect = crawler.signals.connect
        connect(self._open_store, signal=signals.spider_opened)
        connect(self._close_store, signal=signals.spider_closed)
        connect(self._dropped, signal=signals.request_dropped)
        connect(self.flush_stats, signal=stats_wanted)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyMiddleware:
        return cls(crawler)

    async def _open_store(self) -> None:
        self._watch.start(WATCH_INTERVAL, now=False)
        try:
            await self.store.open()
        except ConnectionError as exc:
            self._close(STORE_UNAVAILABLE, str(exc))

    async def _close_store(self) -> None:
        self.router.stop()
        if self._watch.running:
            self._watch.stop()
        self.ledger.spider_closed()
        self.flush_stats()
        await self.store.close()
        self.flush_stats()  # what the store's last writes counted

    def _dropped(self, request: Request) -> None:
        # A duplicate the scheduler dropped: Scrapy fetches that URL once.
        self.ledger.close(request.meta)

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

    def flush_stats(self) -> None:
        """Write the counters kept locally to the crawl's stats."""
        assert self.stats is not None
        self.stats.set_value("sticky_proxy/requests", self._requests)
        self.stats.set_value("sticky_proxy/tracked_keys", len(self.store))
        for name, count in self.store.counters().items():
            if count:
                self.stats.set_value(f"sticky_proxy/{name}", count)

    # -- requests ------------------------------------------------------------

    async def process_request(self, request: Request) -> None:
        meta = request.meta
        if meta.get(M.DONT) or ("proxy" in meta and M.ROUTE not in meta):
            return
        if self._bypass and self._bypass.goes_direct(request):
            return
        key = meta.get(M.KEY)
        if not key:
            key = meta[M.KEY] = self.config.key_func(request)  # type: ignore[misc]
        elif not isinstance(key, str):
            key = meta[M.KEY] = str(key)
        pending = self.router.pending(key)
        if pending is not None:  # a burned key the local view forgot
            await pending
        session = self.router.session(key)
        if session.rotated:
            self._inc("rotations")
        try:
            while not isinstance(step := self.router.admit(session, meta), Decision):
                await self._waits.wait(step.route, step.seconds)
        except Held as held:
            if held.close is not None:
                self._close(*held.close)
            if held.reason is None:
                raise IgnoreRequest(str(held)) from None
            self.ledger.give_up(request, [*reasons(request), held.reason])
        slot = self.pool is not None and self.config.slot_per_proxy
        if slot and ("download_slot" not in meta or meta.get(M.SLOT)):
            meta["download_slot"] = meta[M.SLOT] = step.route
        # No credentials: StickyProxyAuth adds them next to the downloader.
        meta["proxy"] = step.proxy
        meta[M.ROUTE] = step.route
        meta[M.SESSION] = step.session
        meta[M.GENERATION] = step.generation
        self._requests += 1
        self.ledger.routed(request)

    # -- responses -------------------------------------------------------------

    def process_response(
        self, request: Request, response: Response
    ) -> Request | Response:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return response
        if response.status == 407:
            self._auth_failed(route)
        cached = "cached" in response.flags
        shows_target = response.status < 500 and not cached
        host = urlparse_cached(request).netloc if shows_target else None
        self.router.answered(route, meta, host)
        reason = self.policy.response_ban(response)
        if reason is None:
            self.router.succeeded(route)
            passed(request, response)
            restore(meta)
            return response
        if cached:
            # An older run's ban page: not this session's fault.
            self._inc("cached_bans")
            return self.copies.retry(request, reason, "cached_bans")
        return self._ban(request, reason)

    def process_exception(
        self, request: Request, exception: Exception
    ) -> Request | None:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return None
        if isinstance(exception, IgnoreRequest):
            # Dropped by another component (the HTTP cache, a custom
            # middleware): no answer from the route, and the drop is theirs.
            self.router.inconclusive(route, meta)
            return None
        if is_tunnel_407(exception):
            self._auth_failed(route)
        if isinstance(exception, UNREACHABLE):
            # No ban (burning sessions would not help), and for a static
            # proxy no re-roll either: held back with a backoff, or failed
            # over to a proxy that answers, for STICKY_PROXY_OUTAGE_TIMEOUT.
            stat = self.router.refused(route, meta)
            self._inc(stat)
            reason = f"unreachable/{type(exception).__name__}"
            return self.copies.retry(request, reason, stat)
        self.router.inconclusive(route, meta)
        ban = self.policy.exception_ban(exception)
        if ban is None:
            return None
        bound(request)  # a follow-up built from response.meta starts afresh
        soft = meta.get(M.SOFT_RETRIED)
        since = None
        if isinstance(exception, TIMEOUTS):
            timeout = number(meta.get("download_timeout"), self.download_timeout)
            host = urlparse_cached(request).netloc
            since = self.router.exit_blamed(host, soft, timeout)
            if since is None:
                # The target answered nobody meanwhile: it is slow or down,
                # not this exit banned. Left to RetryMiddleware.
                self._inc("target_timeouts")
                return None
        if soft:
            return self._ban(request, ban)
        # A reset or a timeout may be the network, or a gateway going down,
        # rather than a ban: try the same session once more before burning
        # it. A second failure on it is a ban.
        self._inc("soft_retries")
        new = self.copies.retry(request, ban, "soft_retries")
        new.meta[M.SOFT_RETRIED] = True if since is None else since
        stamp(new)
        return new

    def _ban(self, request: Request, reason: str) -> Request:
        meta = request.meta
        self._inc("bans")
        self._inc(f"bans/{reason}")
        self.router.banned(meta[M.KEY], meta[M.GENERATION], meta[M.ROUTE])
        new = self.copies.reroll(request, reason, "rerolls")
        self._inc("rerolls")
        return new

    def _auth_failed(self, route: str) -> None:
        self.router.auth_failed(route)
        self._inc("auth_failed")
        self._close(
            AUTH_FAILED,
            f"the proxy {route} answered 407 Proxy Authentication Required: "
            "check the credentials in STICKY_PROXY_URL / STICKY_PROXY_LIST",
        )
        raise IgnoreRequest(f"proxy {route} rejected the credentials (407)")

    # -- helpers ---------------------------------------------------------------

    def _inc(self, name: str, count: int = 1) -> None:
        """The one way this package's components count: ``sticky_proxy/<name>``."""
        assert self.stats is not None
        self.stats.inc_value(f"sticky_proxy/{name}", count)

    def _close(self, reason: str, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        logger.error("Closing the spider (%s): %s", reason, message)
        self.router.stop()
        engine = self.crawler.engine
        assert engine is not None
        deferred_from_coro(engine.close_spider_async(reason=reason))
