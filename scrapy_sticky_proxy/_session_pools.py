"""Session pools, the Scrapy side (the core is :mod:`.routing.session_pools`):
which pool a request without a key joins (``meta["sticky_proxy_pool"]``, or
its host or domain by STICKY_PROXY_SESSION_POOL) and so which member key it
gets; and, with STICKY_PROXY_SESSION_SLOTS, each member's own download slot,
whose concurrency and delay come from the downloader's DOWNLOAD_SLOTS
entries (:class:`SlotSettings`), so that a pool of 8 sessions with one
request at a time each looks like 8 people, not one crowd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals

from . import _meta as M
from ._key_guard import checked, meta_key
from ._stats import PREFIX as STATS
from ._stats import stats_wanted
from ._warmup_requests import robots_txt
from .config.readers import shown
from .routing.keys import registrable_domain, url_key
from .routing.session_pools import PREFIX, SessionPools, host_of

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from ._stats import Counter
    from .config import StickyProxyConfig

logger = logging.getLogger("scrapy_sticky_proxy.middleware")

SLOT_PREFIX = "sticky_proxy:"  # a member's slot: this and its key
INVALID = "invalid_meta/" + M.POOL


def _domain(url: str) -> str | None:
    host = host_of(url)
    return registrable_domain(host) if host else None


SPANS: dict[str, Callable[[str], str | None]] = {"host": host_of, "domain": _domain}


def slot_name(key: str) -> str:
    """The download slot of the member key *key* (in its country or not)."""
    return SLOT_PREFIX + key.replace("\x00", "@")


class SlotSettings(dict[str, Any]):
    """The downloader's DOWNLOAD_SLOTS, and for a member's slot that has no
    entry there, ours: the user's entry for a slot name wins. Read by the
    downloader when it makes a slot (again after its idle slots are
    collected), so it holds one entry, not one per slot."""

    def __init__(self, user: dict[str, Any], entry: dict[str, Any]):
        super().__init__(user)
        self.entry = entry

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key)
        if found is None and isinstance(key, str) and key.startswith(SLOT_PREFIX):
            return dict(self.entry)
        return default if found is None else found

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, str) and key.startswith(SLOT_PREFIX):
            return dict(self.entry)
        raise KeyError(key)


class Pools:
    """The middleware's side: the key of a request that carries none, and
    the download slot of a member's request."""

    def __init__(self, crawler: Crawler, config: StickyProxyConfig, count: Counter):
        policy = config.session_pools
        self.crawler = crawler
        self.core = SessionPools(policy)
        self.slots = policy.slots
        self.requests = 0  # given a member: counted here, written by flush()
        # The user's function, checked per request (_key_guard.py).
        self._key_func = checked(config.key_func, config.redact)
        self.meta_key = meta_key(config.redact)  # a meta key that is no str
        self._robots_apart = config.warmup is not None  # _warmup_requests.py
        self._span = SPANS[policy.span] if policy.span else None
        self._count = count
        self._redact = config.redact
        self._warned = False
        self._max_idle = config.pool_max_idle  # the handler's idle cap
        self._cap_said = not self._max_idle  # 0: the user keeps none idle
        connect = crawler.signals.connect
        connect(self.flush, signal=stats_wanted)
        connect(self.flush, signal=signals.spider_closed)
        self.entry = {
            "concurrency": policy.slot_concurrency,
            "delay": policy.slot_delay,
        }
        if self.slots:
            connect(self._install, signal=signals.engine_started)
        if policy.idle:
            logger.warning(
                "%s set, but STICKY_PROXY_SESSION_POOL is None: only requests "
                "that name their pool in meta['sticky_proxy_pool'] join a pool. "
                "Set STICKY_PROXY_SESSION_POOL = 'host' (or 'domain') to pool "
                "every request without a key",
                ", ".join(policy.idle),
            )

    @property
    def direct(self) -> Callable[[Request], str] | None:
        """STICKY_PROXY_KEY's function when :meth:`key` would call it for any
        request whose meta names no pool (no pool by site, no warm-up), for
        the middleware to call it without this one in between."""
        if self._robots_apart or self._span is not None:
            return None
        return self._key_func

    def key(self, request: Request) -> str:
        """The key of a request that carries none: a member of its pool, or
        STICKY_PROXY_KEY's when it joins none (with a warm-up, a robots.txt
        request's own URL)."""
        if self._robots_apart and robots_txt(request):
            return url_key(request.url)
        meta = request.meta
        name = meta.get(M.POOL)
        if name is not None and not (isinstance(name, str) and name):
            self._invalid(request, name)
            name = None
        if name is None:
            if self._span is None or (name := self._span(request.url)) is None:
                return self._key_func(request)  # type: ignore[misc]
            meta[M.POOL] = name
        self.requests += 1
        core = self.core
        made = core.made
        member = core.member(name)
        if core.made != made and not self._cap_said:
            self._check_idle_cap(name)
        return member

    def slot(self, meta: dict[str, Any], key: str) -> None:
        """A member's request goes through the member's own download slot,
        unless the user chose one; it wins over the static proxy's slot
        (STICKY_PROXY_SLOT_PER_PROXY), which several sessions share."""
        if not key.startswith(PREFIX):
            return
        if "download_slot" in meta and not (meta.get(M.POOL_SLOT) or meta.get(M.SLOT)):
            return  # the user's
        meta["download_slot"] = meta[M.POOL_SLOT] = slot_name(key)
        meta.pop(M.SLOT, None)

    def flush(self) -> None:
        stats = self.crawler.stats
        if stats is None or not self.requests:
            return
        stats.set_value(STATS + "pool/requests", self.requests)
        stats.set_value(STATS + "pool/pools", self.core.made)
        if self.core.evicted:
            stats.set_value(STATS + "pool/evicted", self.core.evicted)

    def _install(self) -> None:
        engine = self.crawler.engine
        if engine is None:
            return
        downloader = engine.downloader
        downloader.per_slot_settings = SlotSettings(
            downloader.per_slot_settings, self.entry
        )

    def _check_idle_cap(self, name: str) -> None:
        """A new pool with more members than the handler keeps idle
        connections: said once (members come back in turn, each to find
        its connection closed if too many were idle meanwhile)."""
        policy = self.core.policy
        size = policy.size_of(name)
        if size <= self._max_idle:
            return
        self._cap_said = True
        logger.warning(
            "Session pool %s has %d members (%s) but the download handler keeps "
            "at most STICKY_PROXY_POOL_MAX_IDLE = %d idle connections: the members "
            "past the cap open a new connection at each of their turns (a round "
            "trip to the provider, a TLS handshake for https sites). Raise "
            "STICKY_PROXY_POOL_MAX_IDLE to at least the members of the pools you "
            "crawl at once",
            shown(name, redact=self._redact),
            size,
            "STICKY_PROXY_SESSION_POOL_SIZES"
            if name in policy.sizes
            else "STICKY_PROXY_SESSION_POOL_SIZE",
            self._max_idle,
        )

    def _invalid(self, request: Request, value: Any) -> None:
        """A pool name that is no non-empty string: dropped, counted, the
        first one of the crawl said."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "Ignoring meta[%r] = %s of %s: expected a pool name (a non-empty "
                "string); the request joins the pool STICKY_PROXY_SESSION_POOL "
                "gives it, if any. Further bad values are only counted, in %s",
                M.POOL,
                shown(value, redact=self._redact),
                self._redact(request.url),
                STATS + INVALID,
            )
        self._count.inc(INVALID)
        del request.meta[M.POOL]
