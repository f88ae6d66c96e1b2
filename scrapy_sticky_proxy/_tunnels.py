"""Tunnels to a proxy: a CONNECT tunnel that fails as soon as the proxy
closes it unanswered (Scrapy's endpoint waits for the answer only, until
DOWNLOAD_TIMEOUT), and the refusal of TLS inside TLS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotSupported
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from scrapy import Request


class FailFastTunnel:
    """Scrapy's CONNECT endpoint waits for the proxy's answer and nothing
    else: a proxy that accepts the connection and then closes or resets it
    before answering left the request hanging until DOWNLOAD_TIMEOUT. This
    wrapper fails the tunnel as soon as its connection is lost unanswered,
    with a ConnectError: the route could not be reached."""

    def __init__(self, endpoint: Any):
        self._endpoint = endpoint

    def connect(self, factory: Any) -> Deferred[Any]:
        tunnel: Deferred[Any] | None = None

        def lost(reason: Failure) -> None:
            if tunnel is not None and not tunnel.called:
                tunnel.errback(
                    ConnectError(
                        string="the proxy closed the connection before it "
                        f"answered CONNECT: {reason.getErrorMessage()}"
                    )
                )

        tunnel = self._endpoint.connect(_LossWatchingFactory(factory, lost))
        return tunnel


class _LossWatchingFactory(Factory):
    """Builds the wrapped factory's protocol, and tells *on_lost* when its
    connection is lost (before anything else hears of it)."""

    def __init__(self, factory: Any, on_lost: Any):
        self._factory = factory
        self._on_lost = on_lost

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._factory.buildProtocol(addr)
        connection_lost = protocol.connectionLost

        def watched(reason: Failure = connectionDone) -> None:
            self._on_lost(reason)
            connection_lost(reason)

        protocol.connectionLost = watched
        return protocol


def refuse_tls_in_tls(request: Request, proxy: object) -> None:
    """Raise NotSupported for an https:// request through an https:// proxy
    (Scrapy raises a bare NotImplementedError for it); the message names
    the proxy by host:port only."""
    if not isinstance(proxy, str) or proxy[:8].lower() != "https://":
        return
    if urlparse_cached(request).scheme != "https":
        return
    rest = proxy[8:]
    hostport = rest.partition("/")[0].rpartition("@")[2]
    raise NotSupported(
        f"https:// proxy {hostport} cannot carry https:// requests in Scrapy "
        "(that needs TLS inside the TLS connection to the proxy): use an "
        "http:// proxy URL for https sites; their own TLS still runs end to "
        "end, through CONNECT"
    )
