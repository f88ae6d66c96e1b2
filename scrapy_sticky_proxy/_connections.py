"""One connection per session: the download handler's turns.

With one session per item, an item page's follow-ups leave together, and
each one found its session's connection busy (a connection carries one
request at a time) and opened its own: three connections to the gateway
per item instead of one, each a round trip to the provider and a session
set-up on a real network. :class:`SessionTurns` lets at most
``STICKY_PROXY_CONNECTIONS_PER_SESSION`` requests of a session be sent at
once; the others wait, first come first served, for a turn, which a request
hands to the next one when its download ends. Twisted puts a keep-alive
connection back into the pool before the response is delivered, so the
next request finds it idle and reuses it (a tunnel for https). When no
connection came back (the server closed it, the download failed), there is
nothing to wait for: every waiter of the session goes at once.

Turns are per session *and* per connection: the key holds the proxy and,
for https, the target host (a tunnel leads to one host), so a session's
requests to two https hosts never wait for each other, nor do two sessions.
A session busier than its connections (a key many requests share: a
site's, a pool member's, a start page's inherited by its subtree) is not
sent one request at a time: at most ``2 * limit`` of its requests wait, and
the next ones go at once, each on a connection of its own (then kept for
the session), as in Scrapy. A wait is bounded: after *timeout* seconds the
request goes without a turn, on a connection of its own; once the spider
closes (:data:`crawl_closing`), no request waits any more. One
timer watches every waiter (it fires at the earliest deadline, expires what
is due and re-arms for the next), not one timer per waiter: about half the
requests of a crawl with one session per item wait for a turn, and a timer
each (set, then cancelled) was a measurable part of what a turn cost. Under
the asyncio reactor a waiter waits on a plain asyncio future, not on a
Deferred made into one.

Why here and not in a download slot per session: a slot per session would
take sessions out of their site's CONCURRENT_REQUESTS_PER_DOMAIN and
DOWNLOAD_DELAY (every session its own slot), and it needs a delay of at
least 1 ms, since a slot without one lets its whole queue out at once under
the asyncio reactor (see config/session_pools.py); measured (issue 16), it
was no faster at loopback and slower with a far gateway. The price here: a
request waiting for its turn counts as downloading in its slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import CallLaterResult, call_later, is_asyncio_available
from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from collections.abc import Hashable

# A sweep that fires this close to a deadline expires it: timers may fire a
# hair early on a coarse clock, and a re-armed 0 s timer would spin.
_EARLY = 0.001

#: Sent with ``request=`` when the session *request* was sent on is burned:
#: the download handler closes that session's idle connection (a burned
#: session never sends again; its socket would wait for the idle cap or
#: Twisted's 4-minute timeout).
session_burned = object()


class StaleSession(Exception):
    """Raised by the download handler instead of sending a request whose
    session was burned while it waited in its download slot (a delay, a
    slot's concurrency) or for a turn: the middleware sends it again on the
    key's new session."""


#: Sent once when the engine starts closing the spider: requests waiting for
#: a turn go at once instead of one at a time behind each other.
crawl_closing = object()


class _Waiter:
    __slots__ = ("deadline", "granted", "signal")

    def __init__(self, signal: Any, deadline: float) -> None:
        self.signal = signal  # an asyncio Future, or a Deferred
        self.deadline = deadline
        self.granted = False

    def done(self) -> bool:
        signal = self.signal
        if isinstance(signal, asyncio.Future):
            return signal.done()
        return bool(signal.called)

    def release(self) -> None:
        signal = self.signal
        if isinstance(signal, asyncio.Future):
            signal.set_result(None)
        else:
            signal.callback(None)


class SessionTurns:
    """At most *limit* requests at once per key; the others queue, FIFO."""

    def __init__(self, limit: int):
        self.limit = limit
        self.max_waiting = 2 * limit  # per key; more go without waiting
        self.closed = False
        self._busy: dict[Hashable, int] = {}
        self._queues: dict[Hashable, deque[_Waiter]] = {}
        self._timer: CallLaterResult | None = None
        self._timer_at = 0.0
        self._asyncio: bool | None = None  # known at the first wait
        self.waited = 0  # requests that had to wait for a turn
        self.timed_out = 0  # of which, went without one after the timeout
        self.handed = 0  # turns handed on with an idle connection to reuse
        self.let_go = 0  # waiters let go at once: no connection came back, or closing
        self.overflowed = 0  # went at once: enough of their key's waited

    async def take(self, key: Hashable, timeout: float) -> bool:
        """Wait for a turn of *key* (*timeout* seconds at most). True: the
        caller holds a turn and must :meth:`give_back` it; False: it timed
        out and goes without."""
        if self.closed:
            return False
        busy = self._busy.get(key, 0)
        queue = self._queues.get(key)
        if busy < self.limit or (queue is not None and len(queue) >= self.max_waiting):
            if busy >= self.limit:
                self.overflowed += 1
            self._busy[key] = busy + 1
            return True
        waiter = _Waiter(self._signal(), time.monotonic() + timeout)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(waiter)
        self.waited += 1
        self._arm(waiter.deadline)
        try:
            await waiter.signal
        except BaseException:  # the download was cancelled while it waited
            self._leave(key, waiter)
            raise
        if not waiter.granted:
            self._leave(key, waiter)
        return waiter.granted

    def give_back(self, key: Hashable, reused: bool = True) -> None:
        """End a turn of *key*. *reused*: its connection is back in the
        pool, idle, and the next waiter gets the turn to reuse it; else
        there is nothing to wait for (the server closed the connection, the
        download failed) and every waiter goes at once, as without turns."""
        queue = self._queues.get(key)
        go: list[_Waiter] = []
        while queue and (reused is False or not go):
            waiter = queue.popleft()
            if not waiter.done():
                waiter.granted = True
                go.append(waiter)
        if queue is not None and not queue:
            del self._queues[key]
        busy = self._busy.get(key, 0) - 1 + len(go)
        if busy > 0:
            self._busy[key] = busy
        else:
            self._busy.pop(key, None)
        if reused:
            self.handed += len(go)
        else:
            self.let_go += len(go)
        # Last: without the asyncio reactor a callback runs the waiter's
        # download at once, which may come back here.
        for waiter in go:
            waiter.release()

    @property
    def keys(self) -> int:
        """Keys with a turn taken or a request waiting (0 when idle)."""
        return len(self._busy.keys() | self._queues.keys())

    def close(self) -> None:
        """The spider closes: waiters, if any, go now, and no request waits
        from now on; the timer stops."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key, queue in list(self._queues.items()):
            for waiter in list(queue):
                if not waiter.done():
                    self.let_go += 1
                    waiter.release()
                    self._leave(key, waiter)

    def _signal(self) -> Any:
        if self._asyncio is None:
            self._asyncio = is_asyncio_available()
        if self._asyncio:
            return asyncio.get_event_loop().create_future()
        return Deferred()

    def _arm(self, deadline: float) -> None:
        """Have the timer fire by *deadline*."""
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = call_later(max(0.0, deadline - time.monotonic()), self._sweep)

    def _sweep(self) -> None:
        """Expire every waiter whose deadline has come; re-arm for the next."""
        self._timer = None
        now = time.monotonic() + _EARLY
        following: float | None = None
        for key, queue in list(self._queues.items()):
            for waiter in list(queue):
                if waiter.deadline <= now:
                    self._expire(key, waiter)
                elif following is None or waiter.deadline < following:
                    following = waiter.deadline
        if following is not None:
            self._arm(following)

    def _expire(self, key: Hashable, waiter: _Waiter) -> None:
        if not waiter.done():
            self.timed_out += 1
            waiter.release()
            self._leave(key, waiter)

    def _leave(self, key: Hashable, waiter: _Waiter) -> None:
        """Take *waiter* out of the queue; a turn it was handed but cannot
        use any more (cancelled meanwhile) goes to the next one."""
        queue = self._queues.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[key]
        if waiter.granted:
            waiter.granted = False
            self.give_back(key)  # its connection is still idle
