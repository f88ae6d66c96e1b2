"""Warm-up of new sessions (STICKY_PROXY_WARMUP): the middleware's side.

The first request of a cold session (a new key, or a key's next generation)
calls the user's ``warmup(request, session)`` and sends what it returns
through the downloader only (``engine.download_async``: the downloader
middlewares, never the scheduler or the spider), routed through exactly
that session (``meta[M.WARMUP]``), so the session's cookie jar keeps what
the warm-up set. Every request of the session waits here until it ends
(:mod:`.routing.warmup` keeps the state). A warm-up that fails (a ban, the
check says no, a download error) burns the session like a ban, and the
requests that waited take the next generation and warm it; one that ends
unjudged (an outage, the spider closing) burns nothing. Too many failures
in a row for one site close the spider; a request that saw
``max_failures`` warm-ups of its own end badly gives up (recorded).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from . import _meta as M
from ._warmup_requests import prepared, requests_of
from .routing.answers import target_of
from .routing.decisions import CLOSING, Decision, Held, Session
from .routing.ids import session_id
from .routing.warmup import (
    GAVE_UP,
    GRACE,
    START,
    UNJUDGED,
    WARM,
    WARMUP_FAILED,
    WarmStates,
    WarmupSession,
    answered,
    waiting_at,
)

if TYPE_CHECKING:
    from scrapy.http import Response

    from .middleware import StickyProxyMiddleware
    from .routing.router import Router

logger = logging.getLogger("scrapy_sticky_proxy.middleware")


class _Late(Exception):
    """The warm-up took longer than STICKY_PROXY_WARMUP_TIMEOUT."""


class Warmups:
    """Built by the middleware when STICKY_PROXY_WARMUP is set."""

    def __init__(self, mw: StickyProxyMiddleware):
        policy = mw.config.warmup
        assert policy is not None
        self.crawler = mw.crawler
        self.router = mw.router
        self.waits = mw._waits
        self.bans = mw.policy
        self.cookies = mw.cookies
        self.count = mw.count
        self.close = mw._close
        self.policy = policy
        self.check = policy.check or answered
        self.states = WarmStates(policy, mw.config.max_keys)
        self._running: set[Deferred[None]] = set()

    def session(self, meta: dict[str, Any], key: str, router: Router) -> Session:
        """The session a request goes through: a warm-up's own, or the key's."""
        marker = meta.get(M.WARMUP)
        if marker is None:
            return router.session(key)
        generation = marker[1] if isinstance(marker, tuple) else None
        if marker != (key, generation) or type(generation) is not int:
            del meta[M.WARMUP]  # not ours: an ordinary request
            return router.session(key)
        if self.router.store.generation(key) != generation:
            raise IgnoreRequest("a warm-up of a session that was burned meanwhile")
        return Session(
            key,
            generation,
            session_id(key, generation, router.config.provider.id_rules),
            False,
        )

    async def ready(
        self, request: Request, session: Session, step: Decision, router: Router
    ) -> Decision:
        """*step* once the request's session is warm; until then the request
        waits for its warm-up, and then goes where the router says (the key
        may be on a new generation, which warms up in turn). Raises
        :class:`Held` as the router's admit does."""
        meta = request.meta
        if M.WARMUP in meta:
            return step  # a warm-up goes through its cold session
        states, key, rounds, waited = self.states, session.key, 0, False
        while True:
            generation = session.generation
            verdict, seconds = states.check(key, generation, self.router.clock())
            if verdict == WARM:
                if not waited:
                    return step
                waited = False
                if self.router.store.generation(key) != generation:
                    session = self._session(key, router)
                step = await self._admit(session, meta, router)
                continue
            if verdict == START:
                self._keep(deferred_from_coro(self._run(request, session, step.route)))
            elif M.PROBE in meta:
                # The route's probe must not wait behind a warm-up that
                # waits for the probe's answer.
                self.router.inconclusive(step.route, meta)
            waited = True
            token = states.token(key, generation)
            if token is not None:  # running (it may have ended already)
                await self.waits.wait(waiting_at(key, generation), seconds + GRACE)
                if self.router.stopping:
                    raise Held(CLOSING)
                if states.token(key, generation) == token:
                    continue  # woken before it ended
            if states.warm(key, generation):
                continue
            rounds += 1
            if rounds >= self.policy.max_failures:
                raise Held(GAVE_UP)
            session = self._session(key, router)
            step = await self._admit(session, meta, router)

    def _keep(self, run: Deferred[None]) -> None:
        """Hold a running warm-up (the loop keeps weak references to tasks)."""
        self._running.add(run)
        run.addBoth(lambda _: self._running.discard(run))

    def _session(self, key: str, router: Router) -> Session:
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

    async def _run(self, request: Request, session: Session, route: str) -> None:
        """The warm-up of *session*, started for *request*."""
        key, generation = session.key, session.generation
        token = self.states.token(key, generation)
        deadline = self.router.clock() + self.policy.timeout
        meta, sent = request.meta, {}  # sent: the last warm-up request's meta
        try:
            country = meta.get(M.COUNTRY) or None
            about = WarmupSession(meta[M.KEY], country, generation, session.id)
            requests = requests_of(self.policy.warmup(request, about))
        except Exception as exc:
            logger.exception("STICKY_PROXY_WARMUP failed for %s", request.url)
            why: str | None = f"error/{type(exc).__name__}"
        else:
            if not requests:
                self.states.needs_none(key, generation)
                self.waits.wake(waiting_at(key, generation))
                return
            self.count.inc("warmup/sessions")
            probe = meta.pop(M.PROBE, None)  # the warm-up goes first: it probes
            try:
                for own in requests:
                    warmup = prepared(own, meta, (key, generation), probe)
                    sent, probe = warmup.meta, None
                    self.count.inc("warmup/requests")
                    left = deadline - self.router.clock()
                    why = self._judge(await self._download(warmup, left))
                    if why is not None:
                        break
            except IgnoreRequest:
                why = UNJUDGED  # given up by us (an outage) or dropped
            except _Late:
                down = self.router.gate(sent.get(M.ROUTE) or route).down
                why = UNJUDGED if down else "timeout"
            except Exception as exc:
                why = f"exception/{type(exc).__name__}"
            if why is not None and self.router.stopping:
                why = UNJUDGED
        assert token is not None
        self._settle(session, token, target_of(request.url), why, sent)
        self.waits.wake(waiting_at(key, generation))

    def _judge(self, response: Response) -> str | None:
        """Why *response* fails the warm-up, or None."""
        if "cached" in response.flags:
            return "cached"  # proves nothing about the session
        ban = self.bans.response_ban(response)
        if ban is not None:
            return f"ban/{ban}"
        try:
            return None if self.check(response) else "check"
        except Exception:
            logger.exception("STICKY_PROXY_WARMUP_CHECK failed")
            return "check_error"

    def _settle(
        self, session: Session, token: int, site: str, why: str | None, sent: Any
    ) -> None:
        """Record the outcome; a failure burns the session the warm-up went
        through (*sent*: its last request's meta; empty if none was sent)."""
        states, key, generation = self.states, session.key, session.generation
        if why is None:
            if states.succeeded(key, generation, token, site):
                self.count.inc("warmup/succeeded")
            return
        if why == UNJUDGED:
            states.interrupted(key, generation, token)
            return
        failures = states.failed(key, generation, token, site)
        if failures is None:
            return  # the spider is closing for a site's failures already
        self.count.inc("warmup/failed")
        route = sent.get(M.ROUTE)
        if isinstance(route, str):
            self.router.banned(key, generation, route)
            if self.cookies is not None:
                self.cookies.burned(sent)
        limit = self.policy.max_failures
        said = "The warm-up of session %s failed (%s): %d in a row for %s"
        logger.info(said, session.id, why, failures, site)
        if failures >= limit:
            self.close(
                WARMUP_FAILED,
                f"{limit} warm-ups in a row failed for {site} (the last: {why}); "
                "see STICKY_PROXY_WARMUP_CHECK and STICKY_PROXY_WARMUP_MAX_FAILURES",
            )

    async def _download(self, request: Request, seconds: float) -> Response:
        """*request* through the downloader; :class:`_Late` after *seconds*
        (the download itself goes on, bounded by its own timeouts)."""
        engine = self.crawler.engine
        assert engine is not None
        done = deferred_from_coro(engine.download_async(request))
        ended: Deferred[list[Any]] = Deferred()

        def settle(result: Any) -> None:
            if not ended.called:
                ended.callback([result])

        done.addBoth(settle)  # also consumes a late failure
        timer = call_later(max(seconds, 0.0), settle, _Late)
        try:
            (result,) = await maybe_deferred_to_future(ended)
        finally:
            timer.cancel()
        if isinstance(result, Failure):
            result.raiseException()
        if result is _Late:
            raise _Late
        return result
