"""Warm-up of new sessions (STICKY_PROXY_WARMUP): the middleware's side,
where requests wait for their session's warm-up.

The first request of a cold session (a new key, or a key's next generation)
starts its warm-up (:mod:`._warmup_runs` sends it; :mod:`.routing.warmup`
keeps the state); every request of the session waits here until it ends. A
request counts as a use of its session (``STICKY_PROXY_SESSION_MAX_USES``)
only once the session is warm: one that merely waits rotates nothing. When
a warm-up fails, its session is burned and the requests that waited warm
the next generation; one that ends unjudged (an outage, a cached answer, a
dropped request) burns nothing and is started again. A request gives up
after ``max_failures`` failed warm-ups of its own (``warmup/failed``), or
as many unjudged ones (``warmup/unjudged``).

A warm-up request carries a :class:`~.routing.warmup.WarmupMarker`: it goes
through exactly the tier and session it warms, or not at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.httpcache import HttpCacheMiddleware
from scrapy.exceptions import IgnoreRequest

from . import _meta as M
from ._location import state_key
from ._warmup_runs import REACHED, SENT, WarmupRuns
from .routing.decisions import CLOSING, Decision, Held, Session
from .routing.ids import session_id
from .routing.keys import host_key
from .routing.warmup import (
    GAVE_UP,
    GRACE,
    START,
    UNJUDGED,
    UNJUDGED_GAVE_UP,
    WAIT,
    WARM,
    WarmStates,
    WarmupMarker,
    waiting_at,
)

if TYPE_CHECKING:
    from scrapy import Request

    from .middleware import StickyProxyMiddleware
    from .routing.router import Router

_UNSET = object()
FAILED = "failed"  # how a warm-up a request waited for ended (also WARM, ...)


class Warmups:
    """Built by the middleware when STICKY_PROXY_WARMUP is set."""

    def __init__(self, mw: StickyProxyMiddleware):
        policy = mw.config.warmup
        assert policy is not None
        self.router = mw.router
        self.waits = mw._waits
        self.count = mw.count
        self.tiers = mw.tiers
        self.policy = policy
        self.states = WarmStates(policy, mw.config.max_keys)
        self.runs = WarmupRuns(mw, self.states)
        mw.tiers.on_move = self.states.moved  # a new tier: a new chance
        self._crawler = mw.crawler
        self._cache: Any = _UNSET if mw.copies.cache else None  # HTTP cache on

    def session(self, meta: dict[str, Any], key: str, router: Router) -> Session:
        """The session a request goes through: a warm-up's own, or the key's
        current one (not counted as a use yet: :meth:`ready` does)."""
        marker = meta.get(M.WARMUP)
        if marker is None:
            return _peek(key, router.store.generation(key), router)
        if not (
            isinstance(marker, WarmupMarker)
            and marker.key == key
            and marker.tier == meta.get(M.TIER, 1)
            and self.states.live(key, marker.generation, marker.token)
        ):
            # Another tier or session than the one it warms, or a warm-up
            # that ended: sent now, it would warm nothing (or the wrong exit).
            raise IgnoreRequest("a warm-up request that matches no running warm-up")
        self.runs.mark(marker.token, REACHED)
        return _peek(key, marker.generation, router)

    async def ready(
        self, request: Request, session: Session, step: Decision, router: Router
    ) -> Decision:
        """*step* once the request's session is warm; until then the request
        waits for its warm-up, and then goes where the router says (the key
        may be on a new generation, which warms up in turn). Raises
        :class:`Held` as the router's admit does."""
        meta = request.meta
        if M.WARMUP in meta:  # a warm-up goes through its cold session
            self.runs.mark(meta[M.WARMUP].token, SENT)
            return step
        if (
            self._cache is not None
            and not self.states.warm(session.key, session.generation)
            and self._from_cache(request)
        ):
            return step  # the HTTP cache answers (or drops) it: nothing to warm
        held = False  # the session was acquired: its use is counted
        fresh = True  # *step* was admitted for *session*, and nothing waited
        failed = unjudged = 0
        while True:
            ended = await self._warmed(request, session, step)
            if ended is None:  # warm
                if not held:
                    held, cold = True, session.generation
                    session = self._acquire(session.key, router)
                    if session.generation != cold:  # rotated just now
                        fresh = False
                        continue
                if fresh:
                    return step
                fresh, step = True, await self._admit(session, meta, router)
                continue
            fresh = False
            if ended == FAILED:
                moved = self._repick(request, step.route)
                if moved is not None:  # the site left the tier: a new chance
                    (router, session), held, failed = moved, False, 0
                    fresh, step = True, await self._admit(session, meta, router)
                    continue
                failed += 1
                if failed >= self.policy.max_failures:
                    raise Held(GAVE_UP)
            elif ended == UNJUDGED:  # nobody's fault; bounded all the same
                unjudged += 1
                if unjudged >= self.policy.max_failures:
                    raise Held(UNJUDGED_GAVE_UP)
            else:
                continue  # warm now, or woken before it ended
            current = router.store.generation(session.key)
            if current != session.generation:  # burned: the next one warms up
                held, session = False, _peek(session.key, current, router)

    async def _warmed(
        self, request: Request, session: Session, step: Decision
    ) -> str | None:
        """None if *session* is warm. Otherwise waits for its warm-up (starts
        it if none runs), and says how that ended: :data:`WARM`,
        :data:`FAILED`, :data:`UNJUDGED`, or :data:`WAIT` (woken before)."""
        states, key, generation = self.states, session.key, session.generation
        verdict, seconds = states.check(key, generation, self.router.clock())
        if verdict == WARM:
            return None
        if verdict == START:
            if self.router.stopping:
                raise Held(CLOSING)
            self.runs.start(request, session, step.route)
        elif M.PROBE in request.meta:
            # The route's probe must not wait behind a warm-up that waits
            # for the probe's answer.
            self.router.inconclusive(step.route, request.meta)
        token = states.token(key, generation)
        if token is not None:  # running (it may have ended already)
            await self.waits.wait(waiting_at(key, generation), seconds + GRACE)
            if self.router.stopping:
                raise Held(CLOSING)
            if states.token(key, generation) == token:
                return WAIT
        if states.warm(key, generation):
            return WARM
        return FAILED if states.has_failed(key, generation) else UNJUDGED

    def _from_cache(self, request: Request) -> bool:
        """Whether HttpCacheMiddleware will answer *request* with a fresh
        page, or drop it (``HTTPCACHE_IGNORE_MISSING``), as its
        process_request decides: then it never reaches the session, and a
        warm-up would only cost a request through the gateway (a replay of
        a cached crawl sent one per session)."""
        cache = self._cache
        if cache is _UNSET:
            cache = self._cache = self._crawler.get_downloader_middleware(
                HttpCacheMiddleware
            )
        if cache is None or request.meta.get("dont_cache"):
            return False
        try:
            if not cache.policy.should_cache_request(request):
                return False
            page = cache.storage.retrieve_response(self._crawler.spider, request)
            if page is None:
                return bool(cache.ignore_missing)
            return bool(cache.policy.is_cached_response_fresh(page, request))
        except Exception:  # the cache's to report, when it reads it again
            return False

    def _repick(self, request: Request, route: str) -> tuple[Router, Session] | None:
        """With STICKY_PROXY_TIERS, when the request's site moved to another
        tier since the request was given one: its router and session there."""
        meta = request.meta
        tiers = self.tiers
        if tiers.sites is None or tiers.sites.tier(host_key(request.url)) == meta.get(
            M.TIER
        ):
            return None
        if M.PROBE in meta:  # the old route's probe: given back
            self.router.inconclusive(route, meta)
        del meta[M.TIER]
        router, key = tiers.pick(request, state_key(meta))  # counted there too
        return router, _peek(key, router.store.generation(key), router)

    def _acquire(self, key: str, router: Router) -> Session:
        """The key's session, counted as one use (it may rotate)."""
        session = router.session(key)
        if session.rotated:
            self.count.inc("rotations")
        return session

    async def _admit(
        self, session: Session, meta: dict[str, Any], router: Router
    ) -> Decision:
        while not isinstance(step := router.admit(session, meta), Decision):
            await self.waits.wait(step.route, step.seconds)
        return step


def _peek(key: str, generation: int, router: Router) -> Session:
    """(*key*, *generation*) as a session, without counting a use."""
    rules = router.config.provider.id_rules
    return Session(key, generation, session_id(key, generation, rules), False)
