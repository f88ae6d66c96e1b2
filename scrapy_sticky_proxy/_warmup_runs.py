"""One warm-up, run: the user's ``warmup(request, session)`` called, its
requests sent one after another through the downloader only
(``engine.download_async``: the downloader middlewares, never the scheduler
or the spider), each marked with the session and tier it warms
(:class:`~.routing.warmup.WarmupMarker`), and the outcome judged.

A ban verdict on a warm-up is one like any other: counted (``bans``), put to
STICKY_PROXY_BAN_TOLERANCE (a tolerated one sends the request again on the
same session once its wait is over, within the warm-up's deadline), and one
that burns counts in the site's proxy tier window. A failed warm-up (a ban
that burns, the check says no, a download error, the deadline) burns its
session; a cached answer, an outage or the spider closing judge nothing.
Too many failures in a row for one site (on its current tier) close the
spider.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from . import _meta as M
from ._warmup_requests import prepared, requests_of
from .routing.keys import host_key
from .routing.tolerance import RETRY_AFTER, TOO_LONG
from .routing.warmup import (
    UNJUDGED,
    WARMUP_FAILED,
    WarmStates,
    WarmupMarker,
    WarmupSession,
    answered,
    waiting_at,
)

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

    from .middleware import StickyProxyMiddleware
    from .routing.decisions import Session

logger = logging.getLogger("scrapy_sticky_proxy.middleware")

TOLERATED_WAIT = " warm-up tolerated"  # where they wait: no route's name
BAN = "ban/"  # the prefix of a failure that is a ban verdict


class _Late(Exception):
    """The warm-up took longer than STICKY_PROXY_WARMUP_TIMEOUT."""


class WarmupRuns:
    def __init__(self, mw: StickyProxyMiddleware, states: WarmStates):
        policy = mw.config.warmup
        assert policy is not None
        self.crawler = mw.crawler
        self.router = mw.router
        self.tiers = mw.tiers
        self.tolerance = mw.tolerance
        self.waits = mw._waits
        self.bans = mw.policy
        self.cookies = mw.cookies
        self.count = mw.count
        self.close = mw._close
        self.redact = mw.config.redact
        self.policy = policy
        self.check = policy.check or answered
        self.states = states
        self._running: set[Deferred[None]] = set()

    def start(self, request: Request, session: Session, route: str) -> None:
        """The warm-up of *session* (just told START), for *request*."""
        run = deferred_from_coro(self._run(request, session, route))
        # Held: the loop keeps weak references to tasks.
        self._running.add(run)
        run.addBoth(lambda _: self._running.discard(run))

    async def _run(self, request: Request, session: Session, route: str) -> None:
        key, generation = session.key, session.generation
        token = self.states.token(key, generation)
        assert token is not None
        meta = request.meta
        tier = meta.get(M.TIER, 1)  # Tiers.pick's, for this request
        marker = WarmupMarker(key, generation, tier, token, host_key(request.url))
        sent: Request | None = None  # the last warm-up request that went out
        try:
            country = meta.get(M.COUNTRY) or None
            about = WarmupSession(meta[M.KEY], country, generation, session.id)
            requests = requests_of(self.policy.warmup(request, about))
        except Exception as exc:
            url = self.redact(request.url)
            logger.exception("STICKY_PROXY_WARMUP failed for %s", url)
            why: str | None = f"error/{type(exc).__name__}"
        else:
            if not requests:
                self.states.needs_none(key, generation)
                self.waits.wake(waiting_at(key, generation))
                return
            self.count.inc("warmup/sessions")
            probe = meta.pop(M.PROBE, None)  # the warm-up goes first: it probes
            why, sent = await self._send(requests, meta, marker, probe, route)
        self._settle(marker, session.id, why, sent)
        self.waits.wake(waiting_at(key, generation))

    async def _send(
        self,
        requests: list[Request],
        meta: dict[str, Any],
        marker: WarmupMarker,
        probe: Any,
        route: str,
    ) -> tuple[str | None, Request | None]:
        """Why the warm-up failed (None: it passed), and its last request
        that went out."""
        deadline = self.router.clock() + self.policy.timeout
        sent = first = None
        why: str | None = None
        try:
            for own in requests:
                self.count.inc("warmup/requests")
                tried = 0  # tolerated ban verdicts of this request
                while True:
                    sent = prepared(own, meta, marker, probe)
                    first, probe = first or sent, None
                    response = await self._download(sent, deadline)
                    sent = response.request or sent
                    why = self._judge(response)
                    if why is None or not why.startswith(BAN):
                        break
                    wait = self._verdict(marker, why, response, tried)
                    if wait is None:
                        break  # burned
                    tried += 1
                    left = deadline - self.router.clock()
                    await self.waits.wait(TOLERATED_WAIT, min(wait, max(left, 0.0)))
                if why is not None:
                    break
        except IgnoreRequest:
            why = UNJUDGED  # given up by us (an outage) or dropped
        except _Late:
            went = sent.meta.get(M.ROUTE) if sent is not None else None
            down = self.router.gate(went if isinstance(went, str) else route).down
            why = UNJUDGED if down else "timeout"
        except Exception as exc:
            why = f"exception/{type(exc).__name__}"
        if why is not None and self.router.stopping:
            why = UNJUDGED
        if first is not None and M.PROBE in first.meta:
            # Answered before the route (another middleware): it proved
            # nothing, and the route's other requests must not wait for it.
            self.router.inconclusive(route, first.meta)
        return why, sent

    def _judge(self, response: Response) -> str | None:
        """Why *response* fails the warm-up, or None."""
        if "cached" in response.flags:
            return UNJUDGED  # proves nothing about the session
        ban = self.bans.response_ban(response)
        if ban is not None:
            return f"{BAN}{ban}"
        try:
            return None if self.check(response) else "check"
        except Exception:
            logger.exception("STICKY_PROXY_WARMUP_CHECK failed")
            return "check_error"

    def _verdict(
        self, marker: WarmupMarker, why: str, response: Response, tried: int
    ) -> float | None:
        """The ban verdict *why* on the warm-up, put to the tolerance: the
        wait before it goes again on the same session, or None (burned)."""
        reason = why[len(BAN) :]
        self.count.inc("bans")
        self.count.inc(f"bans/{reason}")
        retry_after = response.headers.get(b"Retry-After")
        verdict = self.tolerance.verdict(
            marker.key, marker.generation, tried, retry_after
        )
        if verdict.burn:
            if verdict.why == TOO_LONG:
                self.count.inc("retry_after_too_long")
            return None
        self.count.inc("tolerated")
        if response.request is not None:  # a sign its tier is blocked, too
            self.tiers.tolerated(response.request)
        if verdict.why == RETRY_AFTER:
            self.count.inc("retry_after_waits")
        return verdict.seconds

    def _settle(
        self, marker: WarmupMarker, name: str, why: str | None, sent: Request | None
    ) -> None:
        """Record the outcome; a failure burns the session the warm-up went
        through (*sent*: its last request; None if none was sent)."""
        states, key, generation = self.states, marker.key, marker.generation
        token, site = marker.token, marker.site
        if why is None:
            if states.succeeded(key, generation, token, site):
                self.count.inc("warmup/succeeded")
            return
        if why == UNJUDGED:
            states.interrupted(key, generation, token)
            return
        if not states.live(key, generation, token):
            return  # the spider is closing for a site's failures already
        route = sent.meta.get(M.ROUTE) if sent is not None else None
        if sent is not None and isinstance(route, str):
            if why.startswith(BAN):  # and into the site's tier window
                self.tiers.banned(sent, key, generation)
            else:
                self.router.banned(key, generation, route)
            if self.cookies is not None:
                self.cookies.burned(sent.meta)
        # A failure through a tier the site has left (maybe just now, for
        # this very ban) says nothing about the tier it is on.
        sites = self.tiers.sites
        counted = sites is None or sites.tier(site) == marker.tier
        failures = states.failed(key, generation, token, site, counted)
        assert failures is not None
        self.count.inc("warmup/failed")
        limit = self.policy.max_failures
        said = "The warm-up of session %s failed (%s): %d in a row for %s"
        logger.info(said, name, why, failures, site)
        if failures >= limit:
            self.close(
                WARMUP_FAILED,
                f"{limit} warm-ups in a row failed for {site} (the last: {why}); "
                "see STICKY_PROXY_WARMUP_CHECK and STICKY_PROXY_WARMUP_MAX_FAILURES",
            )

    async def _download(self, request: Request, deadline: float) -> Response:
        """*request* through the downloader; :class:`_Late` past *deadline*
        (the download itself goes on, bounded by its own timeouts)."""
        seconds = deadline - self.router.clock()
        if seconds <= 0:
            raise _Late
        engine = self.crawler.engine
        assert engine is not None
        done = deferred_from_coro(engine.download_async(request))
        ended: Deferred[list[Any]] = Deferred()

        def settle(result: Any) -> None:
            if not ended.called:
                ended.callback([result])

        done.addBoth(settle)  # also consumes a late failure
        timer = call_later(seconds, settle, _Late)
        try:
            (result,) = await maybe_deferred_to_future(ended)
        finally:
            timer.cancel()
        if isinstance(result, Failure):
            result.raiseException()
        if result is _Late:
            raise _Late
        return result
