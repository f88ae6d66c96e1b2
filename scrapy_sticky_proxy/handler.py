"""An HTTP/1.1 download handler whose connection pool is keyed by proxy session.

Scrapy's HTTP/1.1 handler caches plain-http proxy connections under the key
``(b"http-proxy", proxy_host, proxy_port, bind_address)``: the credentials are
not part of it. A request of session B can therefore be sent over a
keep-alive connection that session A opened, and a gateway that picks the exit
once per TCP connection sends B out through A's exit. HTTPS targets are not
affected (CONNECT tunnels are keyed by the Proxy-Authorization value), but one
tunnel per session can pile up idle sockets.

This handler changes eight things and nothing else:

* the pool key of a proxied request gets a digest of its Proxy-Authorization
  header, so a connection is only reused by the session that opened it;
* a session sends at most ``STICKY_PROXY_CONNECTIONS_PER_SESSION`` requests
  at once through one connection key (:mod:`._connections`): the others
  wait for a turn and reuse its connection instead of opening their own
  (up to twice that many wait, for half the download timeout at most,
  which the download then has the rest of; more go at once, and none waits
  once the spider closes: :data:`._connections.crawl_closing`);
* the number of idle connections kept in the pool is capped
  (``STICKY_PROXY_POOL_MAX_IDLE``), and empty per-key lists are dropped, so
  one session per URL cannot grow the pool without bound. Over the cap the
  oldest idle connection of a URL session goes first (such a session rarely
  comes back once its page and follow-ups are fetched), then the oldest of
  any: a pool's members, which come back in turn, keep theirs while the
  sessions not keyed by URL fit under the cap. When the oldest is a member
  of the pool whose connection just went idle, that newest one is closed
  instead: the pool has more members than are kept, and the older ones'
  turns come first;
* a session with no request left (none queued in memory, on its way or
  being parsed: :mod:`._live`) has its idle connections closed, instead of
  keeping them until the cap pushes them out;
* a burned session's idle connections are closed at the ban
  (``session_burned``): the session never sends again. The sessions of a
  proxy whose credentials do not carry the session id (a static proxy with
  one login) all send one header: its connections are everyone's, so they
  take no turns, count as no URL session's and are not closed at a ban;
* a request whose session was burned here (one of the 4,096 latest) while
  it waited in its download slot (Scrapy queues it there after the
  middlewares, for a ``DOWNLOAD_DELAY`` or a slot's concurrency) is not
  sent through it: :class:`._connections.StaleSession`, which the
  middleware answers with a copy for the key's new session
  (``sticky_proxy/stale_sessions``), once per request. A session rotated
  by its age or uses is not burned: its queued requests go on it;
* a CONNECT tunnel whose connection the proxy closes before answering fails
  at once (:class:`._tunnels.FailFastTunnel`) instead of at DOWNLOAD_TIMEOUT;
* an https:// request through an https:// proxy, which Scrapy cannot send
  (it would need TLS inside the TLS connection to the proxy), fails with a
  message that names the proxy and the way out (:func:`._tunnels.refuse_tls_in_tls`).
  http:// requests through an https:// proxy work as in Scrapy.

The digest reaches the pool through a context variable set for the duration
of ``download_request`` (the pool writes back the key it used): the Agent
asks the pool for a connection synchronously, inside that call, and the pool
remembers the key it handed out when the connection is returned. No
private Scrapy class is subclassed.

Sessions cost connections (a new session is a new connection), so the
connection path matters: for a proxy given as an IPv4 address (the sandbox,
Tor, most static proxy lists) the pool connects with a plain TCP endpoint
instead of Twisted's HostnameEndpoint, whose name resolution and
happy-eyeballs machinery have nothing to do for an address and cost about as
much CPU as the rest of the request (``python -m bench.e2e``).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.utils.httpobj import urlparse_cached

from . import _meta as M
from ._connections import SessionTurns, StaleSession, crawl_closing, session_burned
from ._live import live_sessions
from ._pool import SESSION, URL_KEYED, SessionKeyedPool, Use
from ._tunnels import refuse_tls_in_tls
from .config import for_crawler
from .ledger import sticky_middleware
from .routing.session_pools import PREFIX as POOL_PREFIX

if TYPE_CHECKING:
    from collections.abc import Hashable

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response


_UNSET = object()
BURNED_KEPT = 4096  # burned sessions remembered, the latest
_AGENT_TIMEOUT = 10.0  # Scrapy's download timeout when meta has none


class StickyProxyDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP/1.1 handler with a session-keyed, bounded pool.

    The addon installs it for ``http`` and ``https`` when those schemes use
    Scrapy's default handler.
    """

    sticky_proxy_aware = True  # sends routed requests through their proxy

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        from twisted.internet import reactor

        # It routes nothing: a missing proxy URL is the middleware's to report.
        config = for_crawler(crawler, require_proxy=False)
        limit = config.connections_per_session
        self.turns = SessionTurns(limit) if limit else None
        old = self._pool
        pool = SessionKeyedPool(reactor, persistent=True, max_idle=config.pool_max_idle)
        pool.maxPersistentPerHost = old.maxPersistentPerHost
        pool._factory = old._factory
        self._pool = pool
        # The digest of each request's session, while the request lives (not
        # its header): a burned session's idle connections are closed.
        self._digests: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()
        # The latest burned ones: their requests still queued are not sent.
        self._burned_digests: dict[bytes, None] = {}
        crawler.signals.connect(self._burned, signal=session_burned)
        if self.turns is not None:
            crawler.signals.connect(self.turns.close, signal=crawl_closing)
        self._router: Any = _UNSET  # StickyProxyMiddleware's, once asked
        self._live = live_sessions(crawler)  # shared with the middleware
        self._live.register(pool, crawler.signals)
        self._own_logins: dict[str, bool] = {}  # route -> _own_login()

    async def close(self) -> None:
        if self.turns is not None:
            self.turns.close()
        await super().close()

    async def download_request(self, request: Request) -> Response:
        proxy = request.meta.get("proxy")
        if proxy:
            refuse_tls_in_tls(request, proxy)
        auth = request.headers.get(b"Proxy-Authorization")
        if not auth or not proxy:
            return await super().download_request(request)
        digest = hashlib.blake2b(auth, digest_size=8).digest()
        meta = request.meta
        own = self._own_login(meta.get(M.ROUTE))
        # One login for every session: its connections are everyone's.
        session_key = meta.get(M.KEY)
        kind = _kind(session_key) if own else None
        live = self._live
        live.sweep()  # closes the idle connections of finished sessions
        turns, key, given = self.turns, None, None
        if turns is not None and own:
            key = _connection_key(request, str(proxy), digest)
            wanted = meta.get("download_timeout")
            # What Scrapy's agent takes: meta's number, or 10 s when none.
            timeout = _seconds(wanted) if wanted else _AGENT_TIMEOUT
            started = time.monotonic()
            # Half the timeout at most; the download gets what is left of it.
            if not await turns.take(key, (timeout or _AGENT_TIMEOUT) / 2):
                key = None
            waited = time.monotonic() - started
            if waited > 0.001 and timeout is not None:  # not an odd value
                given = (meta.get("download_timeout", _UNSET),)
                meta["download_timeout"] = timeout - waited
        use = Use(digest, kind)
        token = SESSION.set(use)
        try:
            # Moved once (its own send only: not a retry's, not a follow-up's
            # built from response.meta): sent as routed.
            moved = meta.pop(M.MOVED, None)
            if digest in self._burned_digests and not (M.WARMUP in meta or moved):
                raise StaleSession(request.url)  # burned while it waited
            return await super().download_request(request)
        finally:
            SESSION.reset(token)
            if given is not None:  # the request's own, for a retry's copy
                _restore(meta, "download_timeout", given[0])
            if own and use.pool_key is not None:
                self._digests[request] = digest
                if isinstance(session_key, str):
                    live.used(session_key, use.pool_key)
            if key is not None:
                reused = self._pool.has_idle(use.pool_key)  # type: ignore[attr-defined]
                turns.give_back(key, reused)  # type: ignore[union-attr]

    def _burned(self, request: Request) -> None:
        digest = self._digests.pop(request, None)
        if digest is not None:
            self._pool.close_session(digest)  # type: ignore[attr-defined]
            burned = self._burned_digests
            burned[digest] = None
            if len(burned) > BURNED_KEPT:
                del burned[next(iter(burned))]  # the oldest

    def _own_login(self, route: object) -> bool:
        """Whether the request's header is one session's own: its route's
        credentials carry the session id. Not for a static proxy with one
        login for every session, nor for a request our middleware does not
        route (``dont_sticky_proxy``, a proxy of the user's own in meta):
        their header may be everyone's, so they take no turns and their
        connections are not closed at a ban, as in Scrapy. Without our
        middleware (this handler alone), headers are taken as set one per
        session."""
        own = self._own_logins.get(route) if isinstance(route, str) else None
        if own is not None:
            return own
        if self._router is _UNSET:
            try:
                owner = sticky_middleware(self._crawler)
            except RuntimeError:  # no engine yet: ask again later
                return True
            self._router = None if owner is None else owner.router
        router = self._router
        if router is None:
            return True
        if not isinstance(route, str) or not router.knows(route):
            return False  # not cached: a crafted route would grow the dict
        own = self._own_logins[route] = router.template(route).has_session
        return own


def _kind(key: object) -> object:
    """URL_KEYED for a session key that is a URL (the default key: one
    session per page), the pool's name for a session pool member's key
    (``pool:<name>#<i>``), else None (a site's, a key of the spider's own)."""
    if not isinstance(key, str):
        return None
    if key[:8].lower().startswith(("http://", "https://")):
        return URL_KEYED
    if key.startswith(POOL_PREFIX) and "#" in key:
        return key[len(POOL_PREFIX) : key.rindex("#")]
    return None


def _restore(meta: dict[str, Any], name: str, value: object) -> None:
    if value is _UNSET:
        meta.pop(name, None)
    else:
        meta[name] = value


def _seconds(value: object) -> float | None:
    """A timeout from meta or settings (untrusted): finite and > 0, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if 0 < value < math.inf else None
    return None


def _connection_key(request: Request, proxy: str, digest: bytes) -> Hashable:
    """What one connection of a session can carry: every plain-http
    request through *proxy*, or the https requests to one host (a tunnel)."""
    url = urlparse_cached(request)
    if url.scheme == "https":  # as Scrapy keys the tunnel: "h" is "H:443"
        return (digest, proxy, url.hostname, url.port or 443)
    return (digest, proxy)
