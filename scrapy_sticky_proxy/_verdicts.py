"""What a ban verdict or a download error does to a routed request: a
retry on the same session (once after a reset or a timeout that may be the
network; below STICKY_PROXY_BAN_TOLERANCE after a ban, once its wait is
over), or a re-roll onto a new session with the burned one forgotten."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import _meta as M
from ._connections import session_burned
from ._location import state_key
from ._reroll import bound, number, stamp
from .bans import TIMEOUTS
from .ledger import reasons
from .routing.answers import RouteFaults, target_of
from .routing.tolerance import RETRY_AFTER, TOO_LONG, Tolerance, Verdict, tried_count

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.signalmanager import SignalManager

    from ._copies import Copies
    from ._stats import Counter
    from ._tiers import Tiers
    from ._waits import Waits
    from .cookies import SessionJars

logger = logging.getLogger("scrapy_sticky_proxy.middleware")

TOLERANCE_WAIT = " tolerated"  # where tolerated retries wait: no route's name
# A request's waits for a route failing every session: 0.5 + 1 + 2 s, the
# last tolerance.OWN_WAIT_MAX (test_faults.py checks the two agree).
ROUTE_WAITS = 3
SOFT_WAIT = 0.5  # seconds before the same-session retry of a download error


class Verdicts:
    def __init__(
        self,
        tiers: Tiers,
        tolerance: Tolerance,
        copies: Copies,
        *,
        cookies: SessionJars | None,
        count: Counter,
        download_timeout: float,
        signals: SignalManager,
    ):
        self.tiers = tiers
        self.router = tiers.router
        self.tolerance = tolerance
        self.copies = copies
        self.cookies = cookies
        self.count = count
        self.download_timeout = download_timeout
        self.signals = signals
        self.faults = RouteFaults()
        self._route_said = False  # the warning above _route_wait's retries

    async def hold(self, meta: dict[str, Any], waits: Waits) -> Any:
        """A tolerated retry waits here until its deadline, holding one of
        CONCURRENT_REQUESTS but no download slot: the others go on. Returns
        the deadline it had (for a copy the next run should honour)."""
        not_before = meta.pop(M.NOT_BEFORE, None)
        if not_before is not None and not self.router.stopping:
            seconds = self.tolerance.remaining(not_before)
            if seconds > 0:
                await waits.wait(TOLERANCE_WAIT, seconds)
        return not_before

    def download_error(
        self, request: Request, ban: str, exception: Exception
    ) -> Request | None:
        """*exception* is a ban by the policy: a retry on the same session
        first, a ban the second time; None to leave it to RetryMiddleware."""
        bound(request)  # a follow-up built from response.meta starts afresh
        meta = request.meta
        soft = meta.get(M.SOFT_RETRIED)
        since = None
        waited = tried_count(meta.get(M.ROUTE_WAITS))
        if not isinstance(exception, TIMEOUTS) and waited < ROUTE_WAITS:
            route, router = meta[M.ROUTE], self.router
            answered_at = router.gate(route).answered_at
            if self.faults.down(
                route, meta.get(M.SESSION), answered_at, router.clock()
            ):
                return self._route_wait(request, exception, waited)
        if isinstance(exception, TIMEOUTS):
            timeout = number(meta.get("download_timeout"), self.download_timeout)
            host = target_of(request.url)
            since = self.router.exit_blamed(host, soft, timeout)
            if since is None:
                # The target answered nobody meanwhile: it is slow or down,
                # not this exit banned. Left to RetryMiddleware.
                self.count.inc("target_timeouts")
                return None
        if soft:
            return self.ban(request, ban)
        # A reset or a timeout may be the network, or a gateway going down,
        # rather than a ban: try the same session once more, a moment later
        # (a gateway failing every request shows meanwhile: _route_wait),
        # before burning it. A second failure on it is a ban.
        self.count.inc("soft_retries")
        new = self.copies.retry(request, ban, "soft_retries")
        new.meta[M.SOFT_RETRIED] = True if since is None else since
        new.meta[M.NOT_BEFORE] = self.tolerance.deadline(SOFT_WAIT)
        stamp(new)
        return new

    def _route_wait(
        self, request: Request, exception: Exception, waited: int
    ) -> Request:
        """Sessions in a row fail so with nothing answering between: the
        route itself may be failing (a gateway resetting or garbling every
        request), and burning each exit would not help. The same session
        again after 0.5, 1, then 2 s, no ban; then as any error. Bounded per
        request, and no gate holds it: a route-wide outage would wait for a
        probe, and the probe may be a request whose exit is banned."""
        self.count.inc("route_retries")
        if not self._route_said:
            self._route_said = True
            logger.warning(
                "Sessions in a row through the proxy %s fail with no response "
                "between (%s): requests that fail so go again on their own "
                "session after a short wait, not judged bans "
                "(sticky_proxy/route_retries)",
                request.meta[M.ROUTE],
                type(exception).__name__,
            )
        reason = f"route/{type(exception).__name__}"
        new = self.copies.retry(request, reason, "route_retries")
        new.meta[M.ROUTE_WAITS] = waited + 1
        new.meta[M.NOT_BEFORE] = self.tolerance.deadline(0.5 * 2**waited)
        stamp(new)
        return new

    def ban(
        self, request: Request, reason: str, retry_after: bytes | None = None
    ) -> Request:
        """The site banned the request's session: tolerated, or burned and
        the request re-rolled (IgnoreRequest, recorded, past its budget)."""
        meta = request.meta
        self.count.inc("bans")
        self.count.inc(f"bans/{reason}")
        key, generation = state_key(meta), meta[M.GENERATION]
        if self.tolerance.enabled:
            bound(request)  # a follow-up built from response.meta starts afresh
            tried = meta.get(M.TOLERATED)
            verdict = self.tolerance.verdict(key, generation, tried, retry_after)
            if not verdict.burn:
                self.tiers.tolerated(request)  # a sign its tier is blocked
                return self._tolerate(request, reason, verdict)
            if verdict.why == TOO_LONG:
                self.count.inc("retry_after_too_long")
        self.tiers.banned(request, key, generation)
        self.signals.send_catch_log(session_burned, request=request)
        if self.cookies is not None:
            self.cookies.burned(meta)
        new = self.copies.reroll(request, reason, "rerolls", self.tiers.renewed)
        self.count.inc("rerolls")
        return new

    def _tolerate(self, request: Request, reason: str, verdict: Verdict) -> Request:
        """A copy of *request* for the same session, to go after the wait."""
        self.count.inc("tolerated")
        if verdict.why == RETRY_AFTER:
            self.count.inc("retry_after_waits")
        new = self.copies.retry(request, reason, "tolerated")
        new.meta[M.TOLERATED] = tried_count(request.meta.get(M.TOLERATED)) + 1
        new.meta[M.REASONS] = [*reasons(request), reason]  # for its record
        new.meta[M.NOT_BEFORE] = self.tolerance.deadline(verdict.seconds)
        stamp(new)
        return new
