"""Per-route admission: hold requests back while a route is unproven or down.

A route is the gateway (``host:port``) or one static proxy. Two situations
must not cost a full round of concurrent requests:

* **unproven credentials**: until one response has come back through the
  route, one request (the probe) goes and the others wait, so a wrong
  password costs one request before the spider closes;
* **outage**: when the route refuses connections, requests wait for a
  backoff (doubling up to a maximum) and one probe tries again, instead of
  every request hammering a dead gateway and burning its retry budget.
"""

from __future__ import annotations

from typing import Any

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred

from . import meta as M

OUTAGE_FIRST_BACKOFF = 0.5


class RouteGate:
    __slots__ = ("backoff", "down_since", "expired", "not_before", "state", "waiters")

    def __init__(self) -> None:
        self.state = "unknown"  # -> "probing" -> "ok" | "failed"
        self.waiters: list[Deferred[None]] = []
        self.down_since: float | None = None
        self.backoff = 0.0
        self.not_before = 0.0
        # Down for longer than the outage timeout: requests are given up
        # (recorded) instead of waiting; one probe still goes per backoff.
        self.expired = False

    def settle(self, state: str) -> None:
        self.state = state
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def admit(self, meta: dict[str, Any], now: float) -> bool:
        """True: send the request (as the probe when the route is unproven).
        False: it waited for another request's probe; route it again."""
        if self.state == "failed":
            raise IgnoreRequest("the proxy rejected the credentials (407)")
        if self.state == "unknown":
            self.state = "probing"
            meta[M.PROBE] = True
            if self.not_before > now:
                await _sleep(self.not_before - now)
            return True
        waiter: Deferred[None] = Deferred()
        self.waiters.append(waiter)
        await maybe_deferred_to_future(waiter)
        return False

    def succeeded(self, now: float) -> float | None:
        """A response came back: the route works. Returns how long it had
        been down, if it was."""
        down_for = None if self.down_since is None else now - self.down_since
        self.down_since = None
        self.backoff = 0.0
        self.expired = False
        if self.state != "ok":
            self.settle("ok")
        return down_for

    def probe_failed(self) -> None:
        """The probe failed in a way that says nothing about the route: let
        the next request probe."""
        if self.state == "probing":
            self.settle("unknown")

    def unreachable(
        self, now: float, was_probe: bool, maximum: float, timeout: float
    ) -> float:
        """The route refused a connection. Starts or extends the backoff
        (only the first failure and failed probes extend it: requests that
        were already in flight fail too, and say nothing new). Returns how
        long the route has been down."""
        if self.down_since is None:
            self.down_since = now
            self.backoff = OUTAGE_FIRST_BACKOFF
            self.not_before = now + self.backoff
        elif was_probe:
            self.backoff = min(self.backoff * 2, maximum)
            self.not_before = now + self.backoff
        down_for = now - self.down_since
        self.expired = down_for > timeout
        if self.state != "failed":
            self.settle("unknown")
        return down_for


async def _sleep(seconds: float) -> None:
    done: Deferred[None] = Deferred()
    call_later(seconds, done.callback, None)
    await maybe_deferred_to_future(done)
