"""The downloader middleware: one sticky session per key, bans re-rolled."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler

from . import meta as M
from .backends import make_store
from .bans import TIMEOUTS, UNREACHABLE, AnswerLog, BanPolicy, is_tunnel_407, wait_start
from .cache import bypass, check_guard, restore
from .config import StickyProxyConfig, check_middleware_order
from .gate import RouteGate
from .gaveup import give_up_record
from .keys import session_id
from .pool import ProxyPool
from .reroll import bound, number, passed, restart, stamp
from .store import HealthStore

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .config import StaticProxy

logger = logging.getLogger(__name__)

AUTH_FAILED = "sticky_proxy_auth_failed"
STORE_UNAVAILABLE = "sticky_proxy_store_unavailable"
NO_PROXIES = "sticky_proxy_no_proxies_left"
OUTAGE = "unreachable/outage"  # give-up reason of requests held back too long


class StickyProxyMiddleware:
    """Sets ``meta["proxy"]`` to a per-key session of the configured gateway
    (or a static proxy), and re-rolls banned requests onto a new session."""

    def __init__(self, crawler: Crawler, store: HealthStore | None = None):
        settings = crawler.settings
        config = StickyProxyConfig.from_settings(settings)
        if not config.enabled:
            raise NotConfigured("STICKY_PROXY_ENABLED is False")
        check_middleware_order(settings)
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
        self.pool: ProxyPool | None = None
        self.proxies: dict[str, StaticProxy] = {}
        if config.static_proxies:
            self.proxies = {p.id: p for p in config.static_proxies}
            self.pool = ProxyPool(
                [p.id for p in config.static_proxies],
                [p.weight for p in config.static_proxies],
                config.pool_policy,
            )
        self._gates: dict[str, RouteGate] = {}
        self._closing = False
        # Counted here and written to the stats by flush_stats() (progress
        # line, close): a stats call per request costs more than the rest of
        # a healthy request's routing (bench/per_request.py).
        self._requests = 0
        if self.pool is not None:
            self.store.on_proxy_update = self._proxy_update_from_store
        crawler.signals.connect(self._open_store, signal=signals.spider_opened)
        crawler.signals.connect(self._close_store, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyMiddleware:
        return cls(crawler)

    async def _open_store(self) -> None:
        try:
            await self.store.open()
        except ConnectionError as exc:
            self._close(STORE_UNAVAILABLE, str(exc))

    async def _close_store(self) -> None:
        self.flush_stats()
        await self.store.close()

    def flush_stats(self) -> None:
        """Write the counters kept locally to the crawl's stats."""
        assert self.stats is not None
        self.stats.set_value("sticky_proxy/requests", self._requests)
        self.stats.set_value("sticky_proxy/tracked_keys", len(self.store))

    def _proxy_update_from_store(
        self, proxy_id: str, failures: int, retry_at: float | None, ever_ok: bool
    ) -> None:
        if self.pool is not None and proxy_id in self.proxies:
            self.pool.restore(proxy_id, failures, retry_at, ever_ok)

    # -- requests ------------------------------------------------------------

    async def process_request(self, request: Request) -> None:
        meta = request.meta
        if meta.get(M.DONT) or ("proxy" in meta and M.ROUTE not in meta):
            return
        key = meta.get(M.KEY)
        if not key:
            key = meta[M.KEY] = self.key_func(request)  # type: ignore[misc]
        elif not isinstance(key, str):
            key = meta[M.KEY] = str(key)
        now = time.monotonic()
        generation, rotated = self.store.acquire(key, now)
        if rotated:
            self._inc("rotations")
        sid = session_id(key, generation, self.id_rules)
        while True:
            if self.pool is None:
                assert self.config.gateway is not None
                route = self.config.gateway.hostport
            else:
                route = self._pick_proxy(key, generation, meta.get(M.BANNED_ON))
            gate = self._gate(route)
            if gate.expired and (
                gate.state == "probing" or gate.not_before > time.monotonic()
            ):
                # Down for longer than STICKY_PROXY_OUTAGE_TIMEOUT: record the
                # request instead of holding it; one probe per backoff step
                # still finds out when the proxy is back.
                self._give_up(request, [*meta.get(M.REASONS, ()), OUTAGE])
            # After waiting for another request's probe, pick again: the
            # proxy may have turned out unreachable meanwhile.
            if gate.state == "ok" or await gate.admit(meta, time.monotonic()):
                break
        if self.pool is None:
            proxy_url = self.config.gateway.render(sid)  # type: ignore[union-attr]
        else:
            proxy_url = self.proxies[route].template.render(sid)
            if self.config.slot_per_proxy and (
                "download_slot" not in meta or meta.get(M.SLOT)
            ):
                meta["download_slot"] = meta[M.SLOT] = route
        meta["proxy"] = proxy_url
        meta[M.ROUTE] = route
        meta[M.SESSION] = sid
        meta[M.GENERATION] = generation
        self._requests += 1

    def _pick_proxy(self, key: str, generation: int, avoid: str | None) -> str:
        assert self.pool is not None
        # Wall-clock time: proxy health may be shared between processes.
        now = time.time()
        picked = self.pool.pick(key, generation, now, avoid=avoid)
        if picked is None or self.pool.all_dead(now):
            self._close(NO_PROXIES, "every proxy of STICKY_PROXY_LIST is dead")
            raise IgnoreRequest("no usable proxy left in STICKY_PROXY_LIST")
        return picked

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
        meta.pop(M.PROBE, None)
        down_for = self._gate(route).succeeded(time.monotonic())
        if down_for is not None:
            logger.info("The proxy %s answers again after %.1f s", route, down_for)
        if response.status < 500 and "cached" not in response.flags:
            self.answers.answered(urlparse_cached(request).netloc, time.monotonic())
        reason = self.policy.response_ban(response)
        if reason is None:
            if self.pool is not None:
                self._report_proxy(route, ok=True)
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
        if route is None or meta.get(M.DONT) or isinstance(exception, IgnoreRequest):
            return None
        if is_tunnel_407(exception):
            self._auth_failed(request, route)
        gate = self._gate(route)
        was_probe = meta.pop(M.PROBE, False)
        if isinstance(exception, UNREACHABLE):
            unreachable = f"unreachable/{type(exception).__name__}"
            if self.pool is None:
                return self._outage(request, gate, was_probe, unreachable)
            # A static proxy that cannot be reached: count it against the
            # proxy, not the session, and fail over to another proxy.
            gate.probe_failed()
            self._report_proxy(route, ok=False)
            return self._reroll(request, unreachable, "failovers")
        if was_probe:
            gate.probe_failed()
        reason = self.policy.exception_ban(exception)
        if reason is None:
            return None
        return self._exception_ban(request, reason, exception)

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

    def _outage(
        self, request: Request, gate: RouteGate, was_probe: bool, reason: str
    ) -> Request:
        """The gateway refuses connections: that is no ban (burning sessions
        would not help). Hold requests back with a backoff and retry this one
        when the gateway answers, for up to STICKY_PROXY_OUTAGE_TIMEOUT."""
        route = request.meta[M.ROUTE]
        down_for = gate.unreachable(
            time.monotonic(),
            was_probe,
            self.config.outage_backoff_max,
            self.config.outage_timeout,
        )
        if down_for == 0:
            logger.warning(
                "The proxy %s refuses connections: holding requests back and "
                "retrying with a backoff (up to %.0f s apart) for %.0f s",
                route,
                self.config.outage_backoff_max,
                self.config.outage_timeout,
            )
        if gate.expired:
            self._give_up(request, [*request.meta.get(M.REASONS, ()), reason])
        self._inc("outage_retries")
        return self._retry_copy(request, reason, "outage_retries")

    def _report_proxy(self, route: str, ok: bool) -> None:
        """Update a static proxy's health; share it when it changed."""
        assert self.pool is not None
        before = self.pool.export(route)
        if ok:
            self.pool.success(route, time.time())
        else:
            self.pool.failure(route, time.time())
        after = self.pool.export(route)
        if after != before:
            self.store.proxy_changed(route, *after)

    def _auth_failed(self, request: Request, route: str) -> None:
        self._gate(route).settle("failed")
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
        if self.pool is not None:
            self._report_proxy(route, ok=False)
        return self._reroll(request, reason, "rerolls")

    def _reroll(self, request: Request, reason: str, stat: str) -> Request:
        """A copy of *request* for a new route, or IgnoreRequest (recorded)
        once the request's re-roll budget is spent."""
        bound(request)  # a follow-up built from response.meta starts afresh
        meta = request.meta
        rerolls = int(number(meta.get(M.REROLLS), 0))
        reasons = meta.get(M.REASONS)
        reasons = [*(reasons if isinstance(reasons, list) else ()), reason]
        limit = int(number(meta.get(M.MAX_REROLLS), self.config.max_rerolls))
        # After a redirect, start again from the request the spider made.
        start = restart(request)
        if rerolls >= limit:
            self._give_up(start, reasons)
        new = self._retry_copy(start, reason, stat)
        new.meta.pop(M.SOFT_RETRIED, None)
        new.meta[M.REROLLS] = rerolls + 1
        new.meta[M.REASONS] = reasons
        if self.pool is not None:
            new.meta[M.BANNED_ON] = meta[M.ROUTE]
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
        record = give_up_record(request, reasons, self.config.redact)
        record["spider"] = getattr(self.crawler.spider, "name", None)
        self._inc("gave_up")
        logger.warning(
            "Gave up on %(url)s after %(attempts)d attempts (%(reasons)s)",
            {
                "url": record["url"],
                "attempts": len(reasons),
                "reasons": ", ".join(reasons),
            },
            extra={"spider": self.crawler.spider},
        )
        self.store.record_give_up(record)
        raise IgnoreRequest(f"sticky proxy gave up: {', '.join(reasons)}")

    # -- helpers ---------------------------------------------------------------

    def _gate(self, route: str) -> RouteGate:
        gate = self._gates.get(route)
        if gate is None:
            gate = self._gates[route] = RouteGate()
        return gate

    def _inc(self, name: str, count: int = 1) -> None:
        assert self.stats is not None
        self.stats.inc_value(f"sticky_proxy/{name}", count)

    def _close(self, reason: str, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        logger.error("Closing the spider (%s): %s", reason, message)
        engine = self.crawler.engine
        assert engine is not None
        deferred_from_coro(engine.close_spider_async(reason=reason))


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
