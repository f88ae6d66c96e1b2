"""The download handler's connection pool: Twisted's, keyed by proxy session
and with a bounded number of idle connections (see :mod:`.handler`)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.web.client import HTTPConnectionPool

from ._tunnels import FailFastTunnel
from .config.connections import DEFAULT_POOL_MAX_IDLE

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable

    from twisted.internet.interfaces import IStreamClientEndpoint


class Use:
    """The session of the request being sent, and the pool key its
    connection was taken under (written by the pool). *kind* is
    :data:`URL_KEYED` for a session keyed by URL, a session pool's name
    for one of its members, else None."""

    __slots__ = ("digest", "kind", "pool_key")

    def __init__(self, digest: bytes, kind: object = None):
        self.digest = digest
        self.kind = kind
        self.pool_key: Hashable | None = None


SESSION: ContextVar[Use | None] = ContextVar("sticky_proxy_session", default=None)
_KEY_ATTR = "_sticky_proxy_pool_key"
URL_KEYED = object()  # ends the pool key of a URL session's connections


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
        self.closed_burned = 0  # idle connections closed by close_session()

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Any:
        use = SESSION.get()
        if use is not None:
            key = (*key, use.digest)  # type: ignore[misc]
            if use.kind is not None:
                key = (*key, use.kind)
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
        kind = _tail(key)
        if kind is URL_KEYED:
            url_keyed[connection] = None
        while len(idle) > self.max_idle:
            victim = next(iter(url_keyed or idle))
            if (
                isinstance(kind, str)
                and _tail(getattr(victim, _KEY_ATTR)) == kind
                and victim is not connection
            ):
                # Members come back in turn, the oldest first: a pool with
                # more members than are kept keeps the older ones' instead.
                victim = connection
            idle[victim].cancel()
            self._removeConnection(getattr(victim, _KEY_ATTR), victim)

    def _removeConnection(self, key: Hashable, connection: Any) -> None:
        super()._removeConnection(key, connection)
        if not self._connections.get(key):
            self._connections.pop(key, None)

    def close_session(self, digest: bytes) -> None:
        """Close the idle connections of the session whose header has
        *digest* (a burned one), its tunnels to every host included; a
        connection in use is not idle, and not closed."""
        keys = [
            k for k in self._connections if isinstance(k, tuple) and digest in k[-2:]
        ]
        self.closed_burned += self.close_idle(keys)

    def close_idle(self, keys: Iterable[Hashable]) -> int:
        """Close the idle connections of these pool keys; how many."""
        closed = 0
        for key in keys:
            for connection in list(self._connections.get(key, ())):
                self._timeouts[connection].cancel()
                self._removeConnection(key, connection)
                closed += 1
        return closed

    def has_idle(self, key: Hashable | None) -> bool:
        return key is not None and bool(self._connections.get(key))

    @property
    def idle_connections(self) -> int:
        return len(self._timeouts)

    @property
    def pool_keys(self) -> int:
        return len(self._connections)


def _tail(key: object) -> object:
    """The last item of a pool key: :data:`URL_KEYED`, a pool's name, ..."""
    return key[-1] if isinstance(key, tuple) else None


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
