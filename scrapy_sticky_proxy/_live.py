"""Sessions with nothing left to send: their idle connections close at once.

With one session per item, a session's connection is wanted while the
item's page and its follow-ups are on their way, and never again once they
are fetched. Kept idle under ``STICKY_PROXY_POOL_MAX_IDLE`` (256), such
connections filled the pool, each an open socket at the provider and in
the crawler until the cap or Twisted's 4-minute timeout closed it.

:class:`LiveSessions` counts, per session key, the requests of that key that
are alive: from the moment one is scheduled (``request_scheduled``, for a
request whose meta names its key) or routed by the middleware (a key it
derives, the URL), until the request object is gone. A request lives in
the scheduler's memory queue, in the middleware (waiting for a warm-up, an
outage, a turn), in the downloader, and as its response's ``request``
while the callback runs; a callback's follow-ups are scheduled before its
response is let go. So when a key's count falls to zero, no request of that
session is queued, on its way or being parsed, and the idle connections
its requests used are closed, at the download handler's next download or
when the crawl goes idle (not inside the finalizer, which may run in the
middle of anything). A request that comes later with the key opens a new
connection with the same session id: the same exit. Requests are counted
only once a download handler of ours has registered its pool (it is made
with the downloader, before any request): without one there is nothing to
close, and nothing to pay.

Counted by object life (a weak reference), not by events, so no outcome of
a request (a cache hit, an ignored request, a duplicate dropped, an error,
a copy made by a retry or a redirect, which is a new object counted in
turn) can be missed, and a count can neither leak nor fall to zero while a
request of the key lives. What keeps a request alive keeps its
session's connection: a reference cycle until the collector's next pass
(a page's response and its selector hold each other), a log handler that
stores records with their arguments (the idle cap then works as before).
A request stored in a disk or Redis queue (JOBDIR, scrapy-redis) is not
alive there: a session whose requests all wait in such a queue loses its
idle connection, and opens one when they come back. Not counted: session
pools' members, whose turns come back (``pool:<name>#<i>``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from scrapy import signals

from . import _meta as M
from .routing.session_pools import PREFIX as POOL_PREFIX

if TYPE_CHECKING:
    from collections.abc import Hashable

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.signalmanager import SignalManager


class _Ref(weakref.ref[Any]):
    __slots__ = ("key", "rid")
    key: str
    rid: int


class LiveSessions:
    """Requests alive per session key; the connections of keys that have
    none left are closed in the registered pools."""

    def __init__(self) -> None:
        self._alive: dict[str, int] = {}
        self._refs: dict[int, _Ref] = {}  # id(request) -> its weak reference
        self._used: dict[str, set[Hashable]] = {}  # key -> pool keys it used
        self._done: list[str] = []  # keys whose last request went
        self._pools: list[Any] = []  # the download handlers' pools
        self.closed = 0  # idle connections closed

    def _scheduled(self, request: Request) -> None:
        key = request.meta.get(M.KEY)
        if isinstance(key, str):  # untrusted: the middleware makes it a str
            self.hold(request, key)

    def hold(self, request: Request, key: str) -> None:
        """Count *request* under *key* until it is gone (once per object)."""
        rid = id(request)
        if not self._pools or rid in self._refs or key.startswith(POOL_PREFIX):
            return
        ref = _Ref(request, self._gone)
        ref.key, ref.rid = key, rid
        self._refs[rid] = ref
        self._alive[key] = self._alive.get(key, 0) + 1

    def _gone(self, ref: _Ref) -> None:
        # A finalizer: it may run inside any code, so it only takes note.
        if self._refs.get(ref.rid) is ref:
            del self._refs[ref.rid]
        key = ref.key
        left = self._alive.get(key, 0) - 1
        if left > 0:
            self._alive[key] = left
        else:
            self._alive.pop(key, None)
            if key in self._used:  # it has connections to close
                self._done.append(key)

    def register(self, pool: Any, crawl_signals: SignalManager) -> None:
        """A download handler's pool, whose connections are closed here.
        Requests are counted from then on: with no handler of ours there is
        nothing to close (ours is made with the downloader, before any
        request)."""
        if not self._pools:
            crawl_signals.connect(self._scheduled, signal=signals.request_scheduled)
            # The crawl's last sessions: no download comes after them to sweep.
            crawl_signals.connect(self.sweep, signal=signals.spider_idle)
        self._pools.append(pool)

    def used(self, key: str, pool_key: Hashable) -> None:
        """A request of *key*, alive, was sent on a connection of *pool_key*."""
        if key in self._alive:
            keys = self._used.get(key)
            if keys is None:
                self._used[key] = {pool_key}
            else:
                keys.add(pool_key)

    def sweep(self) -> None:
        """Close the idle connections of the keys with no request left."""
        if not self._done:
            return
        keys, self._done = self._done, []
        for key in keys:
            if key not in self._alive:  # not held again since
                used = self._used.pop(key, None)
                if used:
                    for pool in self._pools:
                        self.closed += pool.close_idle(used)

    def __len__(self) -> int:
        return len(self._alive)


_BY_CRAWLER: weakref.WeakKeyDictionary[Crawler, LiveSessions] = (
    weakref.WeakKeyDictionary()
)


def live_sessions(crawler: Crawler) -> LiveSessions:
    """The crawl's LiveSessions, shared by the middleware (which counts) and
    the download handlers (which close)."""
    live = _BY_CRAWLER.get(crawler)
    if live is None:
        live = _BY_CRAWLER[crawler] = LiveSessions()
    return live
