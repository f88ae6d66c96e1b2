"""The downloader middleware: the Scrapy adapter of the router.

Meta in, the router's decision applied (``meta["proxy"]``, the session id,
the download slot, the session's cookie jar), responses and download errors
turned into the router's events; what a ban does to the request is
:mod:`._verdicts`' (same-session retries, re-rolls), copies are made through
``get_retry_request`` (:mod:`._copies`), and requests that will not reach the
spider are recorded (:mod:`.ledger`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.defer import deferred_from_coro

from . import _meta as M
from ._bypass import Bypass
from ._connections import StaleSession
from ._copies import Copies
from ._lifecycle import Lifecycle
from ._location import Countries, state_key
from ._policy_guard import ban_policy
from ._reroll import Redirects, passed
from ._session_pools import Pools
from ._stats import Counter
from ._tiers import Tiers
from ._verdicts import Verdicts
from ._waits import Waits
from ._warmup import Warmups
from ._wiring import check_handlers, check_shared_connections, check_wiring
from .bans import UNREACHABLE, BanPolicy, ProxyAuth, is_tunnel_407
from .cache import bypass, check_guard, restore
from .config import for_crawler
from .cookies import SessionJars
from .ledger import Ledger, persistent, reasons
from .routing.answers import target_of
from .routing.decisions import CLOSING, Decision, Held
from .routing.tolerance import Tolerance
from .state.backends import make_store

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .state.store import HealthStore


logger = logging.getLogger(__name__)

AUTH_FAILED = "sticky_proxy_auth_failed"
STALE = "stale_sessions"


class StickyProxyMiddleware:
    """Sets ``meta["proxy"]`` to a per-key session of the configured gateway
    (or a static proxy), and re-rolls banned requests onto a new session."""

    def __init__(self, crawler: Crawler, store: HealthStore | None = None):
        config = for_crawler(crawler)
        if not config.enabled:
            raise NotConfigured("STICKY_PROXY_ENABLED is False")
        settings = crawler.settings
        check_wiring(settings, config)
        self.crawler = crawler
        self.config = config
        self.count = count = Counter(crawler.stats)
        handlers = check_handlers(settings, config.allow_handlers)
        check_shared_connections(settings, config.allow_shared_connections)
        self._bypass = Bypass(handlers, count.inc) if handlers else None
        if store is None:
            store = make_store(config, getattr(crawler.spider, "name", "") or "")
        self.policy: BanPolicy = ban_policy(crawler)
        self.proxy_auth = ProxyAuth()
        self._waits = Waits()
        self.tiers = Tiers(config, store, self._waits.wake, count)
        self.router = self.tiers.router  # with STICKY_PROXY_TIERS, every tier's
        self.tolerance = Tolerance(config.tolerance, store)
        self._redirects = Redirects(crawler)  # to re-rolls and the cache
        self.store = store
        self.pool = self.router.pool
        self.ledger = Ledger(crawler, store, config.redact, count.inc)
        self.cookies = (
            SessionJars(crawler, config.max_cookie_jars, count)
            if config.cookie_jars
            else None
        )
        self.copies = Copies(crawler, config, self.ledger, check_guard(settings))
        self.countries = Countries(config, count, self.ledger)
        self.pools = Pools(crawler, config, count)
        self.verdicts = Verdicts(
            self.tiers,
            self.tolerance,
            self.copies,
            cookies=self.cookies,
            count=count,
            download_timeout=settings.getfloat("DOWNLOAD_TIMEOUT"),
            signals=crawler.signals,
        )
        self._closing = False  # we asked the engine to close the spider
        self._persistent = persistent(crawler)  # the queue outlives the run
        # Kept: signal receivers are weak references.
        sites = self.tiers.sites  # their tiers go in the JOBDIR state
        self._lifecycle = Lifecycle(
            crawler, self.router, self.ledger, count, self._close, sites=sites
        )
        self.warmups = Warmups(self) if config.warmup is not None else None
        # What most requests skip (bench/per_request.py): pools, countries
        self._key_func = self.pools.direct
        self._located = config.country is not None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyMiddleware:
        return cls(crawler)

    # -- requests ------------------------------------------------------------

    async def process_request(self, request: Request) -> Request | None:
        meta = request.meta
        if meta.get(M.DONT):
            self._unrouted(meta)
            return None
        if "proxy" in meta and M.ROUTE not in meta:
            self.count.user_proxied(request.url, self.config.redact)
            self._unrouted(meta)
            return None
        if self._bypass is not None and self._bypass.goes_direct(request):
            self._unrouted(meta)
            return None
        key = meta.get(M.KEY)
        if key is None:  # only None means "no key": 0 and "" are keys
            direct = self._key_func  # None: maybe a pool's member
            keyer = self.pools.key if direct is None or M.POOL in meta else direct
            key = meta[M.KEY] = keyer(request)  # may raise: _key_guard.py
        elif not isinstance(key, str):
            key = meta[M.KEY] = self.pools.meta_key(request)  # may raise
        self.ledger.live.hold(request, key)  # until it is gone: see _live.py
        if self._located or M.COUNTRY in meta:
            key = self.countries.key(request, key)  # the key in its country
        if self.pools.slots:  # each pool member its own download slot
            self.pools.slot(meta, key)
        deadline = None
        if M.NOT_BEFORE in meta:  # a tolerated retry (no coroutine otherwise)
            deadline = await self.verdicts.hold(meta, self._waits)
        router, key = self.tiers.pick(request, key)  # [STICKY_PROXY_TIERS]
        pending = router.pending(key)
        if pending is not None:  # a burned key the local view forgot
            await pending
        warm = self.warmups
        session = (
            router.session(key) if warm is None else warm.session(meta, key, router)
        )
        if session.rotated:
            self.count.inc("rotations")
        try:
            while not isinstance(step := router.admit(session, meta), Decision):
                await self._waits.wait(step.route, step.seconds)
            if warm is not None:  # the session's warm-up first
                step = await warm.ready(request, session, step, router)
        except Held as held:
            return self._held(request, held, deadline)
        slot = router.pool is not None and self.config.slot_per_proxy
        if slot and ("download_slot" not in meta or meta.get(M.SLOT)):
            meta["download_slot"] = meta[M.SLOT] = step.route
        # No credentials: StickyProxyAuth adds them next to the downloader.
        meta["proxy"] = step.proxy
        meta[M.ROUTE] = step.route
        meta[M.SESSION] = step.session
        meta[M.GENERATION] = step.generation
        if self.cookies is not None:
            self.cookies.assign(meta, step.route, step.session)
        self.count.requests += 1
        self.ledger.routed(request, meta)
        return None

    def _held(self, request: Request, held: Held, deadline: Any) -> Request:
        """*request* must not wait any longer: requeued, or given up."""
        if held.close is not None:
            self._close(*held.close)
        if held.reason is None or M.WARMUP in request.meta:  # a warm-up: unjudged
            raise IgnoreRequest(str(held)) from None
        if held.reason == CLOSING and self._persistent:
            return self.copies.requeue(request, deadline)
        self.ledger.give_up(request, [*reasons(request), held.reason])

    # -- responses -------------------------------------------------------------

    def process_response(
        self, request: Request, response: Response
    ) -> Request | Response:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return response
        cached = "cached" in response.flags
        if not cached and self.proxy_auth.refused(route, request, response.status):
            self._auth_failed(route)
        if cached:
            # From the HTTP cache, not through the route: it proves nothing
            # about the route (an outage goes on, a wrong port is still one).
            self.router.inconclusive(route, meta)
        else:
            shows_target = response.status < 500
            host = target_of(request.url) if shows_target else None
            self.router.answered(route, meta, host)
        reason = self.policy.response_ban(response)
        if reason is None:
            if not cached:  # the route and the session answered
                self.tiers.succeeded(request, route)
                if self.tolerance.enabled:
                    self.tolerance.succeeded(state_key(meta), meta[M.GENERATION])
            if self.cookies is not None:
                self.cookies.settled(meta)
            hop = meta.pop(M.CACHE_HOP, None)  # stored; its next hop is not
            if not passed(request, response, self._redirects):
                restore(meta)
            elif hop:
                bypass(meta)
            return response
        if M.WARMUP in meta:  # judged by the warm-up (_warmup_runs.py)
            meta["dont_retry"] = True  # not by RetryMiddleware, on that exit
            return response
        if cached:  # an older run's ban page: not this session's fault
            self.count.inc("cached_bans")
            if self.cookies is not None:
                self.cookies.settled(meta)
            return self.copies.retry(request, reason, "cached_bans")
        return self.verdicts.ban(request, reason, response.headers.get(b"Retry-After"))

    def process_exception(
        self, request: Request, exception: Exception
    ) -> Request | None:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return None
        if self.cookies is not None:
            self.cookies.settled(meta)
        if isinstance(exception, StaleSession):  # its session burned meanwhile
            self.router.inconclusive(route, meta)  # never sent: no answer
            self.count.inc(STALE)
            moved = self.copies.retry(request, "session/stale", STALE)
            # Once: a key whose ban was forgotten (MAX_KEYS) would go round.
            moved.meta[M.MOVED] = True
            return moved
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
            self.count.inc(stat)
            reason = f"unreachable/{type(exception).__name__}"
            return self.copies.retry(request, reason, stat)
        self.router.inconclusive(route, meta)
        ban = self.policy.exception_ban(exception)
        if ban is None or M.WARMUP in meta:  # a warm-up's error fails it
            return None
        return self.verdicts.download_error(request, ban, exception)

    def _auth_failed(self, route: str) -> None:
        self.router.auth_failed(route)
        self.count.inc("auth_failed")
        self._close(
            AUTH_FAILED,
            f"the proxy {route} answered 407 Proxy Authentication Required: "
            f"check the credentials in {self.tiers.source(route)}",
        )
        raise IgnoreRequest(f"proxy {route} rejected the credentials (407)")

    # -- helpers ---------------------------------------------------------------

    def _unrouted(self, meta: dict[str, Any]) -> None:
        # A proxy of ours in meta copied from a routed response's (meta=
        # {**response.meta, "dont_sticky_proxy": True}) has no credentials.
        route = meta.get(M.ROUTE)
        router = self.router
        if router.knows(route) and meta.get("proxy") == router.endpoint(route):
            del meta["proxy"]
        if self.cookies is not None:
            self.cookies.unrouted(meta)

    def _close(self, reason: str, message: str) -> None:
        if self._closing:
            return
        self._closing = True
        logger.error("Closing the spider (%s): %s", reason, message)
        self.router.stop()
        engine = self.crawler.engine
        assert engine is not None
        deferred_from_coro(engine.close_spider_async(reason=reason))
