"""An HTTP/1.1 download handler whose connection pool is keyed by proxy session.

Scrapy's HTTP/1.1 handler caches plain-http proxy connections under the key
``(b"http-proxy", proxy_host, proxy_port, bind_address)``: the credentials are
not part of it. A request of session B can therefore be sent over a
keep-alive connection that session A opened, and a gateway that picks the exit
once per TCP connection sends B out through A's exit. HTTPS targets are not
affected (CONNECT tunnels are keyed by the Proxy-Authorization value), but one
tunnel per session can pile up idle sockets.

This handler changes six things and nothing else:

* the pool key of a proxied request gets a digest of its Proxy-Authorization
  header, so a connection is only reused by the session that opened it;
* a session sends at most ``STICKY_PROXY_CONNECTIONS_PER_SESSION`` requests
  at once through one connection key (:mod:`._connections`): the others
  wait for a turn and reuse its connection instead of opening their own;
* the number of idle connections kept in the pool is capped
  (``STICKY_PROXY_POOL_MAX_IDLE``), and empty per-key lists are dropped, so
  one session per URL cannot grow the pool without bound. Over the cap the
  oldest idle connection of a URL session goes first (such a session rarely
  comes back once its page and follow-ups are fetched), then the oldest of
  any: a pool's members, which come back in turn, keep theirs while the
  sessions not keyed by URL fit under the cap;
* a burned session's idle connection is closed at once (``session_burned``):
  the session never sends again;
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
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.web.client import HTTPConnectionPool

from ._connections import SessionTurns, session_burned
from ._tunnels import FailFastTunnel, refuse_tls_in_tls
from .config import for_crawler
from .config.connections import DEFAULT_POOL_MAX_IDLE

if TYPE_CHECKING:
    from collections.abc import Hashable

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.internet.interfaces import IStreamClientEndpoint


class _Use:
    """The session of the request being sent, and the pool key its
    connection was taken under (written by the pool)."""

    __slots__ = ("digest", "pool_key", "url_keyed")

    def __init__(self, digest: bytes, url_keyed: bool):
        self.digest = digest
        self.url_keyed = url_keyed
        self.pool_key: Hashable | None = None


_SESSION: ContextVar[_Use | None] = ContextVar("sticky_proxy_session", default=None)
_KEY_ATTR = "_sticky_proxy_pool_key"
_URL_KEYED = object()  # ends the pool key of a URL session's connections
_URL_PERSON = b"url"  # BLAKE2b's personalisation of a URL session's digest


class _Idle(dict[Any, Any]):
    """The pool's ``_timeouts`` (each idle connection -> its timeout call, in
    the order they went idle), which also keeps the idle connections of URL
    sessions, in that order: Twisted deletes a connection from it whenever
    the connection stops being idle (reused, timed out, dropped, closed)."""

    def __init__(self) -> None:
        super().__init__()
        self.url_keyed: dict[Any, None] = {}

    def __delitem__(self, connection: Any) -> None:
        super().__delitem__(connection)
        self.url_keyed.pop(connection, None)


class SessionKeyedPool(HTTPConnectionPool):
    """A Twisted connection pool that separates proxy sessions and caps idle
    connections."""

    def __init__(
        self,
        reactor: Any,
        persistent: bool = True,
        max_idle: int = DEFAULT_POOL_MAX_IDLE,
    ):
        super().__init__(reactor, persistent)
        self.max_idle = max_idle
        self._timeouts: _Idle = _Idle()
        self.closed_burned = 0  # idle connections closed by close_idle()

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Any:
        use = _SESSION.get()
        if use is not None:
            key = (*key, use.digest)  # type: ignore[misc]
            if use.url_keyed:
                key = (*key, _URL_KEYED)
            use.pool_key = key
            if not self._connections.get(key):  # only a new one connects
                endpoint = _address_endpoint(endpoint)
        if hasattr(endpoint, "requestTunnel"):  # a CONNECT tunnel to a proxy
            endpoint = cast("IStreamClientEndpoint", FailFastTunnel(endpoint))
        result = super().getConnection(key, endpoint)
        if not self._connections.get(key):
            self._connections.pop(key, None)
        return result

    def _putConnection(self, key: Hashable, connection: Any) -> None:
        super()._putConnection(key, connection)
        idle = self._timeouts
        if connection not in idle:
            return
        setattr(connection, _KEY_ATTR, key)
        # Twisted makes _timeouts a plain dict when it closes the pool.
        url_keyed: dict[Any, None] = getattr(idle, "url_keyed", {})
        if isinstance(key, tuple) and key[-1] is _URL_KEYED:
            url_keyed[connection] = None
        while len(idle) > self.max_idle:
            oldest = next(iter(url_keyed or idle))
            idle[oldest].cancel()
            self._removeConnection(getattr(oldest, _KEY_ATTR), oldest)

    def _removeConnection(self, key: Hashable, connection: Any) -> None:
        super()._removeConnection(key, connection)
        if not self._connections.get(key):
            self._connections.pop(key, None)

    def close_idle(self, key: Hashable) -> None:
        """Close the idle connections kept under *key* (those of a burned
        session); a connection in use is not idle, and not closed."""
        for connection in list(self._connections.get(key, ())):
            self._timeouts[connection].cancel()
            self._removeConnection(key, connection)
            self.closed_burned += 1

    def has_idle(self, key: Hashable | None) -> bool:
        return key is not None and bool(self._connections.get(key))

    @property
    def idle_connections(self) -> int:
        return len(self._timeouts)

    @property
    def pool_keys(self) -> int:
        return len(self._connections)


def _address_endpoint(endpoint: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """A TCP4ClientEndpoint with the same host, port, timeout and bind address
    when *endpoint* is a HostnameEndpoint for an IPv4 address; else
    *endpoint* itself (names still need resolving, IPv6 stays as it was)."""
    if type(endpoint) is not HostnameEndpoint:
        return endpoint
    try:
        host = endpoint._hostText
        port, timeout = endpoint._port, endpoint._timeout
        reactor, bind = endpoint._reactor, endpoint._bindAddress
    except AttributeError:  # another Twisted: keep its endpoint
        return endpoint
    if not isIPAddress(host):
        return endpoint
    direct = TCP4ClientEndpoint(reactor, host, port, timeout=timeout, bindAddress=bind)
    return cast("IStreamClientEndpoint", direct)


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
        self._download_timeout = (
            _seconds(crawler.settings.getfloat("DOWNLOAD_TIMEOUT")) or 180.0
        )
        old = self._pool
        pool = SessionKeyedPool(reactor, persistent=True, max_idle=config.pool_max_idle)
        pool.maxPersistentPerHost = old.maxPersistentPerHost
        pool._factory = old._factory
        self._pool = pool
        # The pool key each request's session used, while the request lives:
        # a burned session's idle connection is closed (session_burned).
        self._pool_keys: WeakKeyDictionary[Request, Hashable] = WeakKeyDictionary()
        crawler.signals.connect(self._burned, signal=session_burned)

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
        url_keyed = _is_url(request.meta.get("sticky_proxy_key"))
        # Sessions keyed by URL and others never share a connection or a
        # turn, even with one header for all (a proxy URL without {session}):
        # a connection's kind, for the idle cap, is its session's.
        person = _URL_PERSON if url_keyed else b""
        digest = hashlib.blake2b(auth, digest_size=8, person=person).digest()
        turns, key = self.turns, None
        if turns is not None:
            key = _connection_key(request, str(proxy), digest)
            timeout = _seconds(request.meta.get("download_timeout"))
            if not await turns.take(key, timeout or self._download_timeout):
                key = None
        use = _Use(digest, url_keyed)
        token = _SESSION.set(use)
        try:
            return await super().download_request(request)
        finally:
            _SESSION.reset(token)
            if use.pool_key is not None:
                self._pool_keys[request] = use.pool_key
            if key is not None:
                reused = self._pool.has_idle(use.pool_key)  # type: ignore[attr-defined]
                turns.give_back(key, reused)  # type: ignore[union-attr]

    def _burned(self, request: Request) -> None:
        key = self._pool_keys.pop(request, None)
        if key is not None:
            self._pool.close_idle(key)  # type: ignore[attr-defined]


def _is_url(key: object) -> bool:
    """Whether a session key is a URL (the default key: one session per
    page), not a pool member's, a site's or a key of the spider's own."""
    return isinstance(key, str) and key[:8].lower().startswith(("http://", "https://"))


def _seconds(value: object) -> float | None:
    """A timeout from meta or settings (untrusted): finite and > 0, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if 0 < value < math.inf else None
    return None


def _connection_key(request: Request, proxy: str, digest: bytes) -> Hashable:
    """What one connection of a session can carry: every plain-http
    request through *proxy*, or the https requests to one host (a tunnel)."""
    url = urlparse_cached(request)
    if url.scheme == "https":
        return (digest, proxy, url.netloc)
    return (digest, proxy)
