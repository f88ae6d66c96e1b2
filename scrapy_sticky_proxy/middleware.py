"""The downloader middleware: one sticky session per key, bans re-rolled."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler

from . import _meta as M
from ._records import give_up_record, keep_record
from ._reroll import bound, number, passed, restart, stamp
from ._signals import stats_wanted
from ._wiring import Bypass, check_handlers, check_middleware_order
from .bans import TIMEOUTS, UNREACHABLE, AnswerLog, BanPolicy, is_tunnel_407, wait_start
from .cache import bypass, check_guard, restore
from .config import for_crawler
from .config.readers import MAX_REROLLS, meta_count
from .ledger import LOST, Ledger, persistent
from .routing.ids import session_id
from .routing.router import Held, Routes
from .state.backends import make_store
from .state.store import HealthStore

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response


logger = logging.getLogger(__name__)

AUTH_FAILED = "sticky_proxy_auth_failed"
STORE_UNAVAILABLE = "sticky_proxy_store_unavailable"
WATCH_INTERVAL = 1.0  # how often held requests check that the spider closes


class StickyProxyMiddleware:
    """Sets ``meta["proxy"]`` to a per-key session of the configured gateway
    (or a static proxy), and re-rolls banned requests onto a new session."""

    def __init__(self, crawler: Crawler, store: HealthStore | None = None):
        settings = crawler.settings
        config = for_crawler(crawler)
        if not config.enabled:
            raise NotConfigured("STICKY_PROXY_ENABLED is False")
        check_middleware_order(settings)
        self._bypass = Bypass(check_handlers(settings), self._inc)
        self.crawler = crawler
        self.config = config
        self.stats = crawler.stats
        self.store: HealthStore = (
            store
            if store is not None
            else make_store(config, getattr(crawler.spider, "name", "") or "")
        )
        self.policy: BanPolicy = (
            build_from_crawler(config.ban_policy_cls, crawler)
            if config.ban_policy_cls
            else BanPolicy.from_config(config)
        )
        self.key_func = config.key_func
        self.cache = check_guard(settings)
        self.answers = AnswerLog()
        self.download_timeout = settings.getfloat("DOWNLOAD_TIMEOUT")
        self.id_rules = config.provider.id_rules
        self.routes = Routes(config, self.store, self._close)
        self.pool = self.routes.pool
        self._closing = False  # we asked the engine to close the spider
        self._watch = create_looping_call(self._watch_engine)
        # Counted here and written to the stats by flush_stats() (progress
        # line, close): a stats call per request costs more than the rest of
        # a healthy request's routing (bench/per_request.py).
        self._requests = 0
        self.ledger = Ledger()
        crawler.signals.connect(self._open_store, signal=signals.spider_opened)
        crawler.signals.connect(self._close_store, signal=signals.spider_closed)
        crawler.signals.connect(self._dropped, signal=signals.request_dropped)
        crawler.signals.connect(self.flush_stats, signal=stats_wanted)

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
        self.routes.stop_waiting()
        if self._watch.running:
            self._watch.stop()
        if not persistent(self.crawler):
            for request in self.ledger.drain():
                self._record(request, [*_reasons(request), LOST], "failed")
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
            self.routes.stop_waiting()

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
            key = meta[M.KEY] = self.key_func(request)  # type: ignore[misc]
        elif not isinstance(key, str):
            key = meta[M.KEY] = str(key)
        pending = self.store.lookup(key)
        if pending is not None:  # a burned key the local view forgot
            await pending
        now = time.monotonic()
        generation, rotated = self.store.acquire(key, now)
        if rotated:
            self._inc("rotations")
        sid = session_id(key, generation, self.id_rules)
        try:
            route = await self.routes.admit(meta, key, generation)
        except Held as held:
            if held.reason is None:
                raise IgnoreRequest(str(held)) from None
            self._give_up(request, [*_reasons(request), held.reason])
        slot = self.pool is not None and self.config.slot_per_proxy
        if slot and ("download_slot" not in meta or meta.get(M.SLOT)):
            meta["download_slot"] = meta[M.SLOT] = route
        # No credentials: StickyProxyAuth adds them next to the downloader.
        meta["proxy"] = self.routes.endpoint(route)
        meta[M.ROUTE] = route
        meta[M.SESSION] = sid
        meta[M.GENERATION] = generation
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
            self._auth_failed(request, route)
        self.routes.answered(route, meta)
        if response.status < 500 and "cached" not in response.flags:
            self.answers.answered(urlparse_cached(request).netloc, time.monotonic())
        reason = self.policy.response_ban(response)
        if reason is None:
            self.routes.report(route, ok=True)
            passed(request, response)
            restore(meta)
            return response
        if "cached" in response.flags:
            # An older run's ban page: not this session's fault.
            self._inc("cached_bans")
            return self._retry_copy(request, reason, "cached_bans")
        return self._ban(request, reason)

    def process_exception(
        self, request: Request, exception: Exception
    ) -> Request | None:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return None
        gate = self.routes.gate(route)
        if isinstance(exception, IgnoreRequest):
            # Dropped by another component (the HTTP cache, a custom
            # middleware): no answer from the route, and the drop is theirs.
            gate.inconclusive(meta, time.monotonic())
            return None
        if is_tunnel_407(exception):
            self._auth_failed(request, route)
        if isinstance(exception, UNREACHABLE):
            # No ban (burning sessions would not help), and for a static
            # proxy no re-roll either: held back with a backoff, or failed
            # over to a proxy that answers, for STICKY_PROXY_OUTAGE_TIMEOUT.
            stat = self.routes.refused(route, meta)
            self._inc(stat)
            reason = f"unreachable/{type(exception).__name__}"
            return self._retry_copy(request, reason, stat)
        gate.inconclusive(meta, time.monotonic())
        ban = self.policy.exception_ban(exception)
        if ban is None:
            return None
        return self._exception_ban(request, ban, exception)

    def _exception_ban(
        self, request: Request, reason: str, exception: Exception
    ) -> Request | None:
        bound(request)  # a follow-up built from response.meta starts afresh
        meta = request.meta
        soft = meta.get(M.SOFT_RETRIED)
        since = None
        if isinstance(exception, TIMEOUTS):
            timeout = number(meta.get("download_timeout"), self.download_timeout)
            since = wait_start(soft, timeout, time.monotonic())
            if not self.answers.answered_since(urlparse_cached(request).netloc, since):
                # The target answered nobody meanwhile: it is slow or down,
                # not this exit banned. Left to RetryMiddleware.
                self._inc("target_timeouts")
                return None
        if not soft:
            # A reset or a timeout may be the network, or a gateway going
            # down, rather than a ban: try the same session once more before
            # burning it. A second failure on it is a ban.
            self._inc("soft_retries")
            new = self._retry_copy(request, reason, "soft_retries")
            new.meta[M.SOFT_RETRIED] = True if since is None else since
            stamp(new)
            return new
        return self._ban(request, reason)

    def _auth_failed(self, request: Request, route: str) -> None:
        self.routes.gate(route).failed()
        self._inc("auth_failed")
        self._close(
            AUTH_FAILED,
            f"the proxy {route} answered 407 Proxy Authentication Required: "
            "check the credentials in STICKY_PROXY_URL / STICKY_PROXY_LIST",
        )
        raise IgnoreRequest(f"proxy {route} rejected the credentials (407)")

    # -- bans ------------------------------------------------------------------

    def _ban(self, request: Request, reason: str) -> Request:
        meta = request.meta
        key, generation, route = meta[M.KEY], meta[M.GENERATION], meta[M.ROUTE]
        now = time.monotonic()
        self._inc("bans")
        self._inc(f"bans/{reason}")
        self.store.ban(key, generation, now)
        self.routes.report(route, ok=False)
        return self._reroll(request, reason, "rerolls")

    def _reroll(self, request: Request, reason: str, stat: str) -> Request:
        """A copy of *request* for a new route, or IgnoreRequest (recorded)
        once the request's re-roll budget is spent."""
        bound(request)  # a follow-up built from response.meta starts afresh
        meta = request.meta
        rerolls = int(number(meta.get(M.REROLLS), 0))
        reasons = [*_reasons(request), reason]
        limit = meta_count(
            request,
            M.MAX_REROLLS,
            default=self.config.max_rerolls,
            maximum=MAX_REROLLS,
            stats=self.stats,
            redact=self.config.redact,
        )
        # After a redirect, start again from the request the spider made.
        start = restart(request)
        if rerolls >= limit:
            self._give_up(start, reasons)
        new = self._retry_copy(start, reason, stat)
        new.meta.pop(M.SOFT_RETRIED, None)
        new.meta[M.REROLLS] = rerolls + 1
        new.meta[M.REASONS] = reasons
        stamp(new)
        self._inc(stat)
        return new

    def _retry_copy(self, request: Request, reason: str, stat: str) -> Request:
        """A copy of *request*, through get_retry_request, stripped of its
        route; stats under ``sticky_proxy/<stat>/``."""
        retry_times = request.meta.get("retry_times")
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
        _strip_route(new)
        if self.cache:
            bypass(new.meta)  # to the network, not to the HTTP cache
        return new

    def _give_up(self, request: Request, reasons: list[str]) -> None:
        self._record(request, reasons, "gave_up")
        raise IgnoreRequest(f"sticky proxy gave up: {', '.join(reasons)}")

    def request_failed(self, request: Request, reason: str) -> None:
        """A routed request ended in a download error that no middleware
        turned into a new request (see :mod:`.ledger`)."""
        if self.ledger.close(request.meta) is not None:
            self._record(request, [*_reasons(request), reason], "failed")

    def _record(self, request: Request, reasons: list[str], outcome: str) -> None:
        """Record a routed request that will not reach the spider."""
        self.ledger.close(request.meta)
        record = give_up_record(request, reasons, self.config.redact)
        record["outcome"] = outcome
        record["spider"] = getattr(self.crawler.spider, "name", None)
        self._inc(outcome)
        logger.warning(
            "%(verb)s %(url)s after %(attempts)d attempts (%(reasons)s)",
            {
                "verb": "Gave up on" if outcome == "gave_up" else "Failed:",
                "url": record["url"],
                "attempts": len(reasons),
                "reasons": ", ".join(reasons),
            },
            extra={"spider": self.crawler.spider},
        )
        if not keep_record(self.store, record):
            self._inc("gave_up_write_errors")

    # -- helpers ---------------------------------------------------------------

    def _inc(self, name: str, count: int = 1) -> None:
        assert self.stats is not None
        self.stats.inc_value(f"sticky_proxy/{name}", count)

    def _close(self, reason: str, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        logger.error("Closing the spider (%s): %s", reason, message)
        self.routes.stop_waiting()
        engine = self.crawler.engine
        assert engine is not None
        deferred_from_coro(engine.close_spider_async(reason=reason))


def _reasons(request: Request) -> list[str]:
    reasons = request.meta.get(M.REASONS)
    return [str(r) for r in reasons] if isinstance(reasons, list) else []


def _strip_route(request: Request) -> None:
    """Drop what this middleware and HttpProxyMiddleware put on a request,
    so its copy carries no credentials (it may be queued, even in Redis) and
    gets a fresh route."""
    meta = request.meta
    for name in ("proxy", "_auth_proxy", M.ROUTE, M.PROBE, M.SESSION):
        meta.pop(name, None)
    if meta.pop(M.SLOT, None):
        meta.pop("download_slot", None)
    request.headers.pop(b"Proxy-Authorization", None)
