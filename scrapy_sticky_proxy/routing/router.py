"""Where a request goes: the gateway, or the static proxy its key picks, once
that route's gate admits it (see :mod:`.gate`).

The middleware asks :meth:`Routes.admit` for a route and reports back what
came through it (:meth:`answered`, :meth:`refused`, :meth:`report`). Static
proxies that refuse connections are left while another one answers (a
failover, not a ban); when none answers, requests wait at the gate of the
one their key picks, one probe per proxy per backoff step.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _meta as M
from .gate import FAILED, GIVE_UP, GO, GatePolicy, RouteGate
from .pool import ProxyPool

if TYPE_CHECKING:
    from ..config import StickyProxyConfig
    from ..state.store import HealthStore
    from .template import ProxyTemplate

logger = logging.getLogger(__name__)

NO_PROXIES = "sticky_proxy_no_proxies_left"
OUTAGE = "unreachable/outage"  # give-up reason of requests held back too long
CLOSING = "spider_closing"  # give-up reason of requests held when it closed


class Held(Exception):
    """A request that must not wait any longer: record it with ``reason``
    (``None``: the spider is closing for another cause, already logged)."""

    def __init__(self, reason: str | None, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class Routes:
    def __init__(
        self,
        config: StickyProxyConfig,
        store: HealthStore,
        close_spider: Callable[[str, str], None],
    ):
        self.config = config
        self.store = store
        self._close_spider = close_spider
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
        self.stopping = False  # the spider is closing: no request waits
        self._ips: dict[str, Any] = {}

    def gate(self, route: str) -> RouteGate:
        gate = self.gates.get(route)
        if gate is None:
            gate = self.gates[route] = RouteGate(self._policy)
        return gate

    def _template(self, route: str) -> ProxyTemplate:
        if self.pool is None:
            assert self.config.gateway is not None
            return self.config.gateway
        return self.proxies[route].template

    def knows(self, route: object) -> bool:
        """Whether *route* (read from meta: untrusted) is one of ours."""
        if not isinstance(route, str):
            return False
        if self.pool is None:
            return (
                self.config.gateway is not None
                and route == self.config.gateway.hostport
            )
        return route in self.proxies

    def proxy_ip(self, route: str) -> Any:
        """The proxy's address when it is given as one (an
        ``ipaddress`` object), else None."""
        ip = self._ips.get(route, False)
        if ip is False:
            host = self._template(route).hostport.rpartition(":")[0].strip("[]")
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            self._ips[route] = ip
        return ip

    def endpoint(self, route: str) -> str:
        """``scheme://host:port`` of *route*: what ``meta["proxy"]`` holds."""
        return self._template(route).endpoint

    def authorization(self, route: str, session: str, encoding: str) -> bytes | None:
        """The Proxy-Authorization value for *session* through *route*."""
        return self._template(route).authorization(session, encoding)

    async def admit(self, meta: dict[str, Any], key: str, generation: int) -> str:
        """The route to send a request through, once its gate lets it go.
        Every wait is bounded; raises :class:`Held` when it must not wait."""
        while True:
            if self.stopping:
                raise Held(CLOSING)
            if self.pool is None:
                assert self.config.gateway is not None
                route = self.config.gateway.hostport
            else:
                # Pick again after every wait: another proxy may be back.
                route = self._pick(key, generation)
            gate = self.gate(route)
            verdict, seconds = gate.decide(meta, time.monotonic())
            if verdict == GO:
                return route
            if verdict == FAILED:
                raise Held(None, f"proxy {route} rejected the credentials (407)")
            if verdict == GIVE_UP:
                raise Held(OUTAGE)
            await gate.wait(seconds)

    def _pick(self, key: str, generation: int) -> str:
        assert self.pool is not None
        # Wall-clock time: proxy health may be shared between processes.
        now = time.time()
        # Proxies refusing connections are left while another one works.
        picked = self.pool.pick(key, generation, now, avoid=self._down)
        if picked is None or self.pool.all_dead(now):
            self._close_spider(NO_PROXIES, "every proxy of STICKY_PROXY_LIST is dead")
            raise Held(None, "no usable proxy left in STICKY_PROXY_LIST")
        return picked

    def stop_waiting(self) -> None:
        """The spider is closing: no request waits at a gate any more."""
        self.stopping = True
        for gate in self.gates.values():
            gate.release()

    # -- what came back ----------------------------------------------------------

    def answered(self, route: str, meta: dict[str, Any]) -> None:
        """A response came back through *route*."""
        down_for = self.gate(route).answered(meta, time.monotonic())
        if down_for is not None:
            logger.info("The proxy %s answers again after %.1f s", route, down_for)
            self._down.discard(route)
            # Requests held at other proxies' gates may come here now.
            for gate in self.gates.values():
                gate.release()

    def refused(self, route: str, meta: dict[str, Any]) -> str:
        """*route* refused a connection (or reset it at accept): that is no
        ban. Returns the stat the retry counts under."""
        gate = self.gate(route)
        first = not gate.down
        was_probe = meta.get(M.PROBE) == gate.probe
        gate.refused(meta, time.monotonic())
        if first:
            logger.warning(
                "The proxy %s refuses connections: holding requests back and "
                "retrying with a backoff (up to %.0f s apart) for %.0f s",
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
            self.report(route, ok=False, probe=was_probe)
        return "failovers"

    def report(self, route: str, ok: bool, probe: bool = False) -> None:
        """Update a static proxy's health; share it when it changed."""
        if self.pool is None:
            return
        before = self.pool.export(route)
        if ok:
            self.pool.success(route, time.time())
        else:
            self.pool.failure(route, time.time(), probe=probe)
        after = self.pool.export(route)
        if after != before:
            self.store.proxy_changed(route, *after)

    def _restore(
        self, proxy_id: str, failures: int, retry_at: float | None, ever_ok: bool
    ) -> None:
        """Proxy health another process reported (shared backends)."""
        if self.pool is not None and proxy_id in self.proxies:
            self.pool.restore(proxy_id, failures, retry_at, ever_ok)
