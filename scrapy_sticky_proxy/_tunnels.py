"""A CONNECT tunnel that fails as soon as the proxy closes it unanswered
(Scrapy's endpoint waits for the answer only, until DOWNLOAD_TIMEOUT)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure


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
