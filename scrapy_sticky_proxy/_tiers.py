"""Proxy tiers in the crawl (STICKY_PROXY_TIERS): one router per tier, the
tier of each request's site, and each event sent to the router of the
request's route.

Without STICKY_PROXY_TIERS, :class:`Tiers` hands out the one router and the
key as they are. With it, a request goes through the tier its site is on
(:mod:`.routing.tiers`; a site is the request's host name), with the key
suffixed on tiers above 1 (:func:`~.routing.tiers.tiered_key`: the site's
sessions there are new ones), and ``meta["sticky_proxy_tier"]`` says which.
Its ban verdicts (burning its session or tolerated alike) and its
successes move its site. A warm-up request goes through the tier of the
session it warms, and counts for the site it warms
(:class:`~.routing.warmup.WarmupMarker`). :attr:`Tiers.router` is then a
:class:`TieredRouter`: what the middleware, the auth middleware and the
rest ask a router about a route goes to the router of the route's tier
(a route id names its tier, :func:`~.routing.tiers.tier_route`: tiers may
share a gateway, and each tier's route has its own gate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import _meta as M
from .routing.keys import host_key
from .routing.router import Router
from .routing.tiers import Move, SiteTiers, tiered_key
from .routing.warmup import WarmupMarker

if TYPE_CHECKING:
    from scrapy import Request

    from ._stats import Counter
    from .config import StickyProxyConfig
    from .routing.gate import Facts
    from .routing.template import ProxyTemplate
    from .state.store import HealthStore

logger = logging.getLogger("scrapy_sticky_proxy.middleware")


class Tiers:
    def __init__(
        self,
        config: StickyProxyConfig,
        store: HealthStore,
        wake: Callable[[str | None], None],
        count: Counter,
        *,
        wall: Callable[[], float] = time.time,
    ):
        self.count = count
        self.store = store
        self.sites: SiteTiers | None = None
        self.on_move: Callable[[str], None] = lambda site: None  # any move
        if not config.tiers:
            self.router: Any = Router(config, store, wake=wake)
            return
        routers: list[Router] = []
        updates: list[Callable[[str, int, float | None, bool], None]] = []
        for tier in config.tiers:
            store.on_proxy_update = None  # each router with a pool sets its own
            one = replace(
                config,
                provider=tier.provider,
                gateway=tier.gateway,
                static_proxies=tier.static_proxies,
            )
            routers.append(Router(one, store, wake=wake, tier=tier.number))
            if store.on_proxy_update is not None:
                updates.append(store.on_proxy_update)
        if updates:  # shared proxy health: each router ignores another's ids
            store.on_proxy_update = _every(updates)
        self.router = TieredRouter(config, routers, [t.routes for t in config.tiers])
        self.sites = SiteTiers(
            len(routers), config.tier_policy, clock=wall, on_move=self._moved
        )
        store.on_tier_update = self._learned
        policy = config.tier_policy
        if policy.threshold > config.max_rerolls + 1:
            logger.warning(
                "A site moves up a proxy tier after %d bans (STICKY_PROXY_TIER_"
                "WINDOW %d x STICKY_PROXY_TIER_BAN_RATE %g), more than one "
                "request's %d attempts (1 + STICKY_PROXY_MAX_REROLLS): a crawl "
                "from a few start pages gives them up before their site moves",
                policy.threshold,
                policy.window,
                policy.ban_rate,
                config.max_rerolls + 1,
            )

    def pick(self, request: Request, key: str) -> tuple[Router, str]:
        """The router *request* goes through, and its session key there."""
        meta = request.meta
        if self.sites is None:
            meta.pop(M.TIER, None)  # an output: no other value may count
            return self.router, key
        marker = meta.get(M.WARMUP)
        if isinstance(marker, WarmupMarker) and 1 <= marker.tier <= self.sites.top:
            tier = marker.tier  # a warm-up: its session's (_warmup.py checks)
        else:
            tier = self.sites.tier(host_key(request.url))
        meta[M.TIER] = tier
        self.count.inc(f"tier/{tier}/requests")
        return self.router.routers[tier - 1], tiered_key(key, tier)

    def succeeded(self, request: Request, route: str) -> None:
        """The response through *route* was no ban."""
        if self.sites is None and self.router.pool is None:
            return  # nothing learns from it: no static proxy, no tiers
        self.router.succeeded(route)
        if self.sites is not None:
            self._outcome(request, route, banned=False)

    def banned(self, request: Request, key: str, generation: int) -> None:
        """The site banned (*key*, *generation*) of *request*: it burns."""
        route = request.meta[M.ROUTE]
        self.router.banned(key, generation, route)
        if self.sites is not None:
            self._outcome(request, route, banned=True)

    def tolerated(self, request: Request) -> None:
        """A ban verdict on *request* that its session survives
        (STICKY_PROXY_BAN_TOLERANCE): it counts against the tier all the
        same, as one that burns does."""
        if self.sites is not None:
            self._outcome(request, request.meta[M.ROUTE], banned=True)

    def renewed(self, request: Request) -> bool:
        """*request* ran out of re-rolls on a tier its site has left for a
        higher one (maybe for this very ban): they start again there (True).
        Once per tier: the tier it was last renewed on is in its meta."""
        if self.sites is None:
            return False
        meta = request.meta
        went, last = meta.get(M.TIER), meta.get(M.RENEWED, 1)
        if not (isinstance(went, int) and isinstance(last, int)):
            return False  # from meta: untrusted
        tier = self.sites.tier(host_key(request.url))
        if tier <= max(went, last):
            return False
        meta[M.RENEWED] = tier
        return True

    def source(self, route: str) -> str:
        """Where *route* is configured, as messages name it."""
        tiered = self.sites is not None
        return (self.router.of(route) if tiered else self.router).source

    def _outcome(self, request: Request, route: str, banned: bool) -> None:
        tier = self.router.tier_of(route)
        if tier is None:
            return
        if banned:
            self.count.inc(f"tier/{tier}/bans")
        assert self.sites is not None
        marker = request.meta.get(M.WARMUP)
        site = marker.site if isinstance(marker, WarmupMarker) else None
        self.sites.outcome(site or host_key(request.url), tier, banned)

    def _moved(self, move: Move) -> None:
        policy = self.router.config.tier_policy
        if move.up:
            self.count.inc("tier/escalations")
            why = f"{policy.threshold} ban(s) within {policy.window} responses"
        else:
            self.count.inc("tier/descents")
            why = f"{policy.quiet:g} s on tier {move.before}: trying the one below"
        logger.info(
            "The site %s moves from proxy tier %d to %d (%s)",
            move.site,
            move.before,
            move.tier,
            why,
        )
        self.store.tier_changed(move.site, move.tier, move.since)
        self.on_move(move.site)

    def _learned(self, site: str, tier: int, since: float) -> None:
        """Another crawler moved *site* (read from Redis, checked there)."""
        assert self.sites is not None
        if self.sites.learn(site, tier, since):
            self.on_move(site)
            self.count.inc("tier/learned")
            logger.debug("The site %s is on proxy tier %d (shared)", site, tier)


def _every(
    updates: list[Callable[[str, int, float | None, bool], None]],
) -> Callable[[str, int, float | None, bool], None]:
    def update(proxy_id: str, failures: int, retry: float | None, ok: bool) -> None:
        for one in updates:
            one(proxy_id, failures, retry, ok)

    return update


class TieredRouter:
    """The routers of every tier, seen as one by the route of each event."""

    def __init__(
        self, config: StickyProxyConfig, routers: list[Router], routes: list[list[str]]
    ):
        self.config = config
        self.routers = routers
        self.store = routers[0].store
        self.clock = routers[0].clock
        self.pool = routers[0].pool
        self._router = {
            r: router for router, rs in zip(routers, routes, strict=True) for r in rs
        }
        self._tier = {r: n for n, rs in enumerate(routes, 1) for r in rs}

    def of(self, route: object) -> Router:
        """The router of *route* (tier 1's for one that is not ours)."""
        found = self._router.get(route) if isinstance(route, str) else None
        return self.routers[0] if found is None else found

    def tier_of(self, route: object) -> int | None:
        return self._tier.get(route) if isinstance(route, str) else None

    @property
    def stopping(self) -> bool:
        return self.routers[0].stopping

    def stop(self) -> None:
        for router in self.routers:
            router.stop()

    def answered(self, route: str, facts: Facts, host: str | None = None) -> None:
        self.of(route).answered(route, facts, host)

    def succeeded(self, route: str) -> None:
        self.of(route).succeeded(route)

    def banned(self, key: str, generation: int, route: str) -> None:
        self.of(route).banned(key, generation, route)

    def refused(self, route: str, facts: Facts) -> str:
        return self.of(route).refused(route, facts)

    def inconclusive(self, route: str, facts: Facts) -> None:
        self.of(route).inconclusive(route, facts)

    def auth_failed(self, route: str) -> None:
        self.of(route).auth_failed(route)

    def exit_blamed(self, host: str, soft: Any, timeout: float) -> float | None:
        """Blamed when *host* answered since through any tier."""
        for router in self.routers:
            since = router.exit_blamed(host, soft, timeout)
            if since is not None:
                return since
        return None

    def gate(self, route: str) -> Any:
        return self.of(route).gate(route)

    def knows(self, route: object) -> bool:
        return isinstance(route, str) and route in self._router

    def proxy_ip(self, route: str) -> Any:
        return self.of(route).proxy_ip(route)

    def endpoint(self, route: str) -> str:
        return self.of(route).endpoint(route)

    def template(self, route: str) -> ProxyTemplate:
        return self.of(route).template(route)

    def authorization(
        self, route: str, session: str, encoding: str, country: str | None = None
    ) -> bytes | None:
        return self.of(route).authorization(route, session, encoding, country)
