"""Proxy tiers (STICKY_PROXY_TIERS): which tier each site is on, and when it
moves.

Tiers are numbered from 1, the cheapest. A site (a request's host) starts on
tier 1. Every ban verdict or success of a request sent through the site's
current tier is one outcome; once the bans among its last ``window``
outcomes reach ``ban_rate * window``, the site moves up one tier, never
above the top, with an empty window. ``quiet`` seconds after it moved to a
tier above 1, it tries the tier below again (an empty window: bans there
send it back up).

Outcomes of requests sent through another tier than the site's current one
(in flight when it moved) are left out. A move another process shared is
adopted when it is newer than what this process knows (the last move wins).

Pure: no Scrapy, no I/O; time comes from the injected clock (wall time: a
move's time is shared between processes). Bounded: at most ``max_sites``
sites are known, the least recently used forgotten first (a forgotten site
starts again on tier 1).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_TIERS = 16
DEFAULT_MAX_SITES = 100_000


@dataclass(frozen=True)
class TierPolicy:
    """When a site moves: see STICKY_PROXY_TIER_WINDOW, _BAN_RATE, _QUIET.

    The default threshold (5 bans of the last 10) is within the reach of one
    request's re-rolls (STICKY_PROXY_MAX_REROLLS, 5): a crawl from one start
    page moves its site by itself."""

    window: int = 10
    ban_rate: float = 0.5
    quiet: float = 600.0

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 < self.ban_rate <= 1 or not self.quiet > 0:
            raise ValueError("window >= 1, 0 < ban_rate <= 1 and quiet > 0")

    @property
    def threshold(self) -> int:
        """Bans in the window that move a site up (1e-9: 0.3 * 10 is 3)."""
        return max(1, math.ceil(self.ban_rate * self.window - 1e-9))


@dataclass(frozen=True)
class Move:
    """A site went from tier *before* to tier *tier* at *since* (wall time)."""

    site: str
    before: int
    tier: int
    since: float

    @property
    def up(self) -> bool:
        return self.tier > self.before


def tier_route(route: str, tier: int) -> str:
    """The id of *route* (a gateway's host:port, a static proxy's id) on
    *tier*: as given on tier 1, ``#t<n>`` above. Tiers may share a gateway
    (one host:port, a zone or product in the username), and each tier's
    route keeps its own gate, health, cookie jars and download slot."""
    return route if tier == 1 else f"{route}#t{tier}"


def tiered_key(key: str, tier: int) -> str:
    """The session key of *key* on *tier*: its own generations, so that a
    site moving up re-rolls its sessions there. NUL never occurs in a key
    derived from a URL, and a country suffix is two letters: no collision."""
    return key if tier == 1 else f"{key}\x00tier{tier}"


class _Site:
    __slots__ = ("bans", "outcomes", "since", "tier")

    def __init__(self, tier: int, since: float, window: int):
        self.tier = tier
        self.since = since  # when it moved to this tier (-inf: never moved)
        self.outcomes: deque[bool] = deque(maxlen=window)  # True: a ban
        self.bans = 0

    def reset(self, tier: int, since: float) -> None:
        self.tier, self.since, self.bans = tier, since, 0
        self.outcomes.clear()


class SiteTiers:
    def __init__(
        self,
        tiers: int,
        policy: TierPolicy,
        *,
        clock: Callable[[], float] = time.time,
        max_sites: int = DEFAULT_MAX_SITES,
        on_move: Callable[[Move], None] = lambda move: None,
    ):
        if not 1 <= tiers <= MAX_TIERS:
            raise ValueError(f"from 1 to {MAX_TIERS} tiers")
        self.top = tiers
        self.policy = policy
        self.clock = clock
        self.max_sites = max_sites
        self.on_move = on_move
        self._sites: OrderedDict[str, _Site] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sites)

    def tier(self, site: str) -> int:
        """The tier a request to *site* goes through now."""
        entry = self._sites.get(site)
        if entry is None:
            return 1
        self._sites.move_to_end(site)
        if entry.tier > 1:
            now = self.clock()
            if now - entry.since >= self.policy.quiet:
                self._move(site, entry, entry.tier - 1, now)
        return entry.tier

    def outcome(self, site: str, tier: int, banned: bool) -> None:
        """A request to *site* through *tier* was banned, or not."""
        entry = self._sites.get(site)
        if entry is None:
            if not banned or tier != 1:
                return  # nothing to count yet: a window of successes moves nobody
            entry = self._add(site, 1, -math.inf)
        if tier != entry.tier:
            return  # sent before the site moved: says nothing about its tier
        outcomes = entry.outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            entry.bans -= 1
        outcomes.append(banned)
        entry.bans += banned
        if entry.bans >= self.policy.threshold and entry.tier < self.top:
            self._move(site, entry, entry.tier + 1, self.clock())

    def learn(self, site: str, tier: int, since: float) -> bool:
        """Another process moved *site* to *tier* at *since*: adopted (True)
        unless what this process knows is as recent."""
        tier = min(max(tier, 1), self.top)
        entry = self._sites.get(site)
        if entry is None:
            if tier == 1:
                return False
            self._add(site, tier, since)
            return True
        if since <= entry.since:
            return False
        if tier == entry.tier:
            entry.since = since  # its quiet period counts from the last move
            return False
        entry.reset(tier, since)
        return True

    def export(self) -> list[tuple[str, int, float]]:
        """``(site, tier, since)`` of every site above tier 1, the least
        recently used first (for a JOBDIR snapshot; read back by
        :meth:`learn`)."""
        return [(s, e.tier, e.since) for s, e in self._sites.items() if e.tier > 1]

    def _move(self, site: str, entry: _Site, tier: int, now: float) -> None:
        before = entry.tier
        entry.reset(tier, now)
        self.on_move(Move(site, before, tier, now))

    def _add(self, site: str, tier: int, since: float) -> _Site:
        entry = self._sites[site] = _Site(tier, since, self.policy.window)
        if len(self._sites) > self.max_sites:
            self._sites.popitem(last=False)
        return entry
