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
session; a cached answer, an outage, the spider closing, or a deadline
passed before its request went out (held at the route's gate, or by a
middleware before ours) judge nothing. Too many failures in a row for one
site (on its current tier) close the spider. A bug in the warm-up function
(it raises, or returns no requests) is no session's fault: said once, and
the spider closes (:mod:`._warmup_faults`).
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.defer import deferred_from_coro
from twisted.internet.defer import Deferred

from . import _meta as M
from ._connections import session_burned
from ._warmup_faults import WarmupFaults
from ._warmup_requests import Late, download, prepared, requests_of
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
# How far a running warm-up's current request got (WarmupRuns.seen).
REACHED = 1  # our middleware (it may wait at the route's gate)
SENT = 2  # through its session
# What the close message points at, by the last failure.
SETTING_OF = {
    "check": "STICKY_PROXY_WARMUP_CHECK",
    "check_error": "STICKY_PROXY_WARMUP_CHECK",
    "timeout": "STICKY_PROXY_WARMUP_TIMEOUT",
}


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
        self.signals = mw.crawler.signals
        self.count = mw.count
        self.close = mw._close
        self.redact = mw.config.redact
        self.policy = policy
        self.check = policy.check or answered
        self.states = states
        self._running: set[Deferred[None]] = set()
        self.seen: dict[int, int] = {}  # token -> REACHED, SENT (while running)
        self.faults = WarmupFaults(mw)

    def mark(self, token: int, where: int) -> None:
        """The current request of running warm-up *token* got *where*."""
        if token in self.seen:
            self.seen[token] = where

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
        try:
            country = meta.get(M.COUNTRY) or None
            about = WarmupSession(meta[M.KEY], country, generation, session.id)
            requests = requests_of(self.policy.warmup(request, about))
        except Exception as exc:
            self.faults.broken(request, exc)  # the spider closes: nothing judged
            requests = None
        if not requests:
            if requests is None:
                self.states.interrupted(key, generation, token)
            else:
                self.states.needs_none(key, generation)
            self.waits.wake(waiting_at(key, generation))
            return
        self.count.inc("warmup/sessions")
        probe = meta.pop(M.PROBE, None)  # the warm-up goes first: it probes
        self.seen[token] = 0
        try:
            why, sent = await self._send(requests, meta, marker, probe, route)
        finally:
            del self.seen[token]
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
        clock = self.router.clock
        deadline = clock() + self.policy.timeout
        sent = first = None
        why: str | None = None
        seen, token = self.seen, marker.token
        try:
            for own in requests:
                seen[token] = 0
                tried = 0  # tolerated ban verdicts of this request
                try:
                    while True:
                        sent = prepared(own, meta, marker, probe)
                        first, probe = first or sent, None
                        engine = self.crawler.engine
                        assert engine is not None
                        response = await download(engine, sent, deadline, clock)
                        sent = response.request or sent
                        why = self._judge(response)
                        if why is None or not why.startswith(BAN):
                            break
                        wait = self._verdict(marker, why, response, tried)
                        if wait is None:
                            break  # burned
                        tried += 1
                        left = max(deadline - self.router.clock(), 0.0)
                        await self.waits.wait(TOLERATED_WAIT, min(wait, left))
                finally:
                    if seen[token] == SENT:  # counted once it went out
                        self.count.inc("warmup/requests")
                if why is not None:
                    break
        except IgnoreRequest:
            why = UNJUDGED  # given up by us (an outage) or dropped
        except Late:
            went = sent.meta.get(M.ROUTE) if sent is not None else None
            down = self.router.gate(went if isinstance(went, str) else route).down
            # Judged only if its request went through the session (not held
            # at the route's gate, nor before our middleware).
            why = "timeout" if seen[token] == SENT and not down else UNJUDGED
            if not seen[token]:
                self.faults.held(sent)
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
        except Exception as exc:
            text = "".join(traceback.format_exception(exc)).rstrip()
            logger.error("STICKY_PROXY_WARMUP_CHECK failed:\n%s", self.redact(text))
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
        # As get_retry_request writes them for the middleware's own retries.
        self.count.inc("tolerated")
        self.count.inc("tolerated/count")
        self.count.inc(f"tolerated/reason_count/{reason}")
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
            self.signals.send_catch_log(session_burned, request=sent)
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
            see = f"{SETTING_OF[why]} and " if why in SETTING_OF else ""
            self.close(
                WARMUP_FAILED,
                f"{limit} warm-ups in a row failed for {site} (the last: {why}); "
                f"see {see}STICKY_PROXY_WARMUP_MAX_FAILURES",
            )
