"""The router: which session and which proxy a request goes through, and what
each outcome teaches about them.

Request facts in: the key, and the request's meta as plain values (where a
probe carries its token). A decision out: :class:`Decision` (session id,
generation, route, proxy URL), or :class:`Wait` (at which route, for how
long at most), or :class:`Held` raised (the request must not wait any
longer). Events in: :meth:`answered`, :meth:`succeeded`, :meth:`banned`,
:meth:`refused`, :meth:`inconclusive`, :meth:`auth_failed`.

It owns the health store (which generation each key is on), the static
proxy pool and one gate per route (:mod:`.gate`; a route id names its
tier: :func:`.tiers.tier_route`). Static proxies that refuse
connections are left while another one answers (a failover, not a ban);
when none answers, requests wait at the gate of the one their key picks.

No Scrapy, no Twisted: time comes from the injected clocks, and waiting is
the caller's, who waits at most :attr:`Wait.seconds` or until ``wake(route)``
(``wake(None)``: every route) says to decide again.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .answers import AnswerLog, wait_start
from .decisions import (
    CLOSING,
    NEVER_ANSWERED,
    NO_PROXIES,
    OUTAGE,
    UNREACHABLE,
    Decision,
    Held,
    Session,
    Wait,
)
from .gate import FAILED, GIVE_UP, GO, OPEN, Facts, GatePolicy, RouteGate
from .ids import session_id
from .pool import ProxyPool
from .tiers import tier_route

if TYPE_CHECKING:
    from ..config import StickyProxyConfig
    from ..state.store import HealthStore
    from .template import ProxyTemplate

logger = logging.getLogger(__name__)


class Router:  # the values it hands out are in .decisions
    def __init__(
        self,
        config: StickyProxyConfig,
        store: HealthStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wake: Callable[[str | None], None] = lambda route: None,
        tier: int | None = None,  # of STICKY_PROXY_TIERS
    ):
        self.config = config
        gateway = config.gateway  # the id of its route (a static proxy's: its id)
        self.route = tier_route(gateway.hostport, tier or 1) if gateway else None
        setting = "STICKY_PROXY_LIST" if gateway is None else "STICKY_PROXY_URL"
        self.source = f"tier {tier} of STICKY_PROXY_TIERS" if tier else setting
        self.store = store
        self.clock = clock  # gates, sessions, answers: this process only
        self.wall = wall  # static proxy health: shared between processes
        self._wake = wake
        self._id_rules = config.provider.id_rules
        self.proxies = {p.id: p for p in config.static_proxies}
        self.pool: ProxyPool | None = None
        if config.static_proxies:
            self.pool = ProxyPool(
                [p.id for p in config.static_proxies],
                [p.weight for p in config.static_proxies],
                config.pool_policy,
            )
            store.on_proxy_update = self._restore
        self.gates: dict[str, RouteGate] = {}
        self._policy = GatePolicy(
            config.probe_wait, config.outage_backoff_max, config.outage_timeout
        )
        self._down: set[str] = set()  # static proxies refusing connections
        # Until a first answer through any route: since when routes refuse.
        self._refused_since: float | None = None
        self._answered_once = False
        self.stopping = False  # the spider is closing: no request waits
        self.answers = AnswerLog()
        self._ips: dict[str, Any] = {}

    # -- decisions -------------------------------------------------------------

    def pending(self, key: str) -> Awaitable[None] | None:
        """None, or what to await before :meth:`session` (a forgotten key)."""
        return self.store.lookup(key)

    def session(self, key: str) -> Session:
        generation, rotated = self.store.acquire(key, self.clock())
        return Session(
            key, generation, session_id(key, generation, self._id_rules), rotated
        )

    def admit(self, session: Session, facts: Facts) -> Decision | Wait:
        """Where the request goes now, or how long to wait before asking
        again; raises :class:`Held` when it must not wait."""
        if self.stopping:
            raise Held(CLOSING)
        if self._refused_since is not None:
            self._check_reachable()
        if self.route is not None:
            route = self.route
        else:
            # Picked again after every wait: another proxy may be back.
            route = self._pick(session.key, session.generation)
        gate = self.gates.get(route) or self.gate(route)
        if gate.state == OPEN and gate.down_since is None:  # decide()'s GO, early
            return Decision(session.id, session.generation, route, self.endpoint(route))
        verdict, seconds = gate.decide(facts, self.clock())
        if verdict == GO:
            return Decision(session.id, session.generation, route, self.endpoint(route))
        if verdict == FAILED:
            raise Held(None, f"proxy {route} rejected the credentials (407)")
        if verdict == GIVE_UP:
            raise Held(OUTAGE)
        return Wait(route, seconds)

    def _pick(self, key: str, generation: int) -> str:
        assert self.pool is not None
        now = self.wall()
        # Proxies refusing connections are left while another one works.
        picked = self.pool.pick(key, generation, now, avoid=self._down)
        if picked is None or self.pool.all_dead(now):
            dead = (NO_PROXIES, f"every proxy of {self.source} is dead")
            raise Held(None, f"no usable proxy left in {self.source}", close=dead)
        return picked

    def _check_reachable(self) -> None:
        """Nothing has answered since the crawl started and the routes have
        refused for longer than STICKY_PROXY_UNREACHABLE_TIMEOUT: a wrong
        host or port, not an outage worth STICKY_PROXY_OUTAGE_TIMEOUT."""
        assert self._refused_since is not None
        waited = self.clock() - self._refused_since
        if waited <= self.config.unreachable_timeout:
            return
        if self.config.gateway is not None:
            hostport = self.config.gateway.hostport
            what = f"the gateway {hostport} ({self.source}) has not answered"
        else:
            tried = ", ".join(self.proxies)
            what = f"no proxy of {self.source} ({tried}) has answered"
        message = (
            f"{what} since the crawl started: connections refused (or the host "
            f"did not resolve) for {waited:.0f} s. Check the host and port "
            "(STICKY_PROXY_UNREACHABLE_TIMEOUT sets this wait)"
        )
        raise Held(NEVER_ANSWERED, message, close=(UNREACHABLE, message))

    def stop(self) -> None:
        """The spider is closing: no request waits at a gate any more."""
        self.stopping = True
        self._wake(None)

    # -- events ------------------------------------------------------------------

    def answered(self, route: str, facts: Facts, host: str | None = None) -> None:
        """A response came back through *route* (from *host*, when it shows
        the target answering: not a cached one, not a 5xx)."""
        now = self.clock()
        if host is not None:
            self.answers.answered(host, now)
        self._answered_once = True
        self._refused_since = None
        down_for = self.gate(route).answered(facts, now)
        if down_for is not None:
            logger.info("The proxy %s answers again after %.1f s", route, down_for)
            self._down.discard(route)
            self._wake(None)  # requests held at other proxies may come here

    def succeeded(self, route: str) -> None:
        """The response was no ban."""
        self._report(route, ok=True)

    def banned(self, key: str, generation: int, route: str) -> None:
        """The site banned (*key*, *generation*): the key moves on."""
        self.store.ban(key, generation, self.clock())
        self._report(route, ok=False)

    def refused(self, route: str, facts: Facts) -> str:
        """*route* refused a connection (or reset it at accept): that is no
        ban. Returns the stat the retry counts under."""
        gate = self.gate(route)
        first = not gate.down
        was_probe = gate.is_probe(facts)
        now = self.clock()
        gate.refused(facts, now)
        if not self._answered_once and self._refused_since is None:
            self._refused_since = now
        if first:
            logger.warning(
                "The proxy %s refuses connections: requests with no other proxy "
                "wait, retried with a backoff (up to %.0f s apart) for %.0f s",
                route,
                self.config.outage_backoff_max,
                self.config.outage_timeout,
            )
        if self.pool is None:
            return "outage_retries"
        self._down.add(route)
        if first or was_probe:
            # Only what the gate learns counts: requests that were in flight
            # fail together and say nothing new.
            self._report(route, ok=False, probe=was_probe)
        return "failovers"

    def inconclusive(self, route: str, facts: Facts) -> None:
        """The request ended without an answer from *route*."""
        self.gate(route).inconclusive(facts, self.clock())

    def auth_failed(self, route: str) -> None:
        """*route* rejected the credentials (407): nothing goes through it."""
        self.gate(route).failed()

    def exit_blamed(self, host: str, soft: Any, timeout: float) -> float | None:
        """A request to *host* timed out. When it started waiting on its
        session, if *host* answered another request since (the exit is
        tarpitted); None when it answered nobody (the target is slow)."""
        since = wait_start(soft, timeout, self.clock())
        return since if self.answers.answered_since(host, since) else None

    # -- routes ------------------------------------------------------------------

    def gate(self, route: str) -> RouteGate:
        gate = self.gates.get(route)
        if gate is None:
            gate = self.gates[route] = RouteGate(
                self._policy, lambda: self._wake(route)
            )
        return gate

    def template(self, route: str) -> ProxyTemplate:
        if self.pool is None:
            assert self.config.gateway is not None
            return self.config.gateway
        return self.proxies[route].template

    def knows(self, route: object) -> bool:
        """Whether *route* (read from meta: untrusted) is one of ours."""
        if not isinstance(route, str):
            return False
        return route == self.route if self.pool is None else route in self.proxies

    def proxy_ip(self, route: str) -> Any:
        """The proxy's address if given as one (an ``ipaddress``), else None."""
        ip = self._ips.get(route, False)
        if ip is False:
            host = self.template(route).hostport.rpartition(":")[0].strip("[]")
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            self._ips[route] = ip
        return ip

    def endpoint(self, route: str) -> str:
        """``scheme://host:port`` of *route*: what ``meta["proxy"]`` holds."""
        return self.template(route).endpoint

    def authorization(
        self, route: str, session: str, encoding: str, country: str | None = None
    ) -> bytes | None:
        """The Proxy-Authorization value for *session* through *route*."""
        return self.template(route).authorization(session, encoding, country)

    # -- static proxy health -----------------------------------------------------

    def _report(self, route: str, ok: bool, probe: bool = False) -> None:
        """Update a static proxy's health; share it when it changed."""
        if self.pool is None:
            return
        before = self.pool.export(route)
        if ok:
            self.pool.success(route, self.wall())
        else:
            self.pool.failure(route, self.wall(), probe=probe)
        after = self.pool.export(route)
        if after != before:
            self.store.proxy_changed(route, *after)

    def _restore(
        self, proxy_id: str, failures: int, retry_at: float | None, ever_ok: bool
    ) -> None:
        """Proxy health another process reported (shared backends)."""
        if self.pool is not None and proxy_id in self.proxies:
            self.pool.restore(proxy_id, failures, retry_at, ever_ok, self.wall())
