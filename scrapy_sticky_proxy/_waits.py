"""Requests waiting at a route's gate, on the reactor: the router decides
who waits and for how long at most; this wakes them when it says so."""

from __future__ import annotations

from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred


class Waits:
    def __init__(self) -> None:
        self._waiting: dict[str, list[Deferred[None]]] = {}

    async def wait(self, route: str, seconds: float) -> None:
        """Until :meth:`wake` for *route*, or *seconds* at most."""
        waiter: Deferred[None] = Deferred()
        self._waiting.setdefault(route, []).append(waiter)
        timer = call_later(seconds, _fire, waiter)
        try:
            await maybe_deferred_to_future(waiter)
        finally:
            timer.cancel()
            waiting = self._waiting.get(route)
            if waiting and waiter in waiting:  # timed out: not woken
                waiting.remove(waiter)

    def wake(self, route: str | None) -> None:
        """Wake the requests waiting at *route* (every route for None)."""
        if route is None:
            waiting = [w for ws in self._waiting.values() for w in ws]
            self._waiting.clear()
        else:
            waiting = self._waiting.pop(route, [])
        for waiter in waiting:
            _fire(waiter)


def _fire(waiter: Deferred[None]) -> None:
    if not waiter.called:
        waiter.callback(None)
