"""Proxy tiers in Redis: which tier each site is on (:mod:`..routing.tiers`),
shared between crawlers, and off the per-request path.

``ns:tiers`` is a hash: site (a host name) -> ``[tier, since]`` (JSON: the
tier from 1, and the Unix time of the move), expiring a TTL after the last
move. A crawler moves a site in its own view first and queues the move; the
writer sends it as one :data:`TIER` script call, which stores it and
publishes ``t <site> <json>`` on ``ns:events``. Every crawler applies those
events, and loads the hash when it (re)subscribes.

What is read back was written by anyone: a site that is not a bounded,
printable host name, or a value that is not ``[1..16, finite time no more
than 5 minutes ahead]``, is skipped and counted in ``redis/skipped/tier``,
never applied nor raised.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .._numbers import finite
from ..routing.tiers import MAX_TIERS
from .redis_layout import is_lost_connection, short

if TYPE_CHECKING:
    from .redis_store import RedisStore

# KEYS: ns:tiers, ns:events. ARGV: site, [tier, since], ttl.
TIER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], 't ' .. ARGV[1] .. ' ' .. ARGV[2])
return 1
"""
MAX_SITE_LEN = 255  # a host name
SINCE_AHEAD_MAX = 300.0  # clocks of two machines disagree; not by more


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def is_site(value: object) -> bool:
    """Whether *value* can be a site: a host name (no space, no control
    character, bounded)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SITE_LEN
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def parse_tier(value: object, now: float) -> tuple[int, float] | None:
    """``(tier, since)`` from a ``ns:tiers`` value or the tail of a ``t``
    event, or ``None`` if it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return checked(parsed, now)


def checked(parsed: object, now: float) -> tuple[int, float] | None:
    """``(tier, since)`` from ``[tier, since]`` read from anywhere (Redis,
    a JOBDIR snapshot), or ``None`` if it is not one."""
    if not isinstance(parsed, list) or len(parsed) != 2:
        return None
    tier, since = parsed
    if type(tier) is not int or not 1 <= tier <= MAX_TIERS:
        return None
    if not finite(since):
        return None
    if not 0 <= since <= now + SINCE_AHEAD_MAX:
        return None
    return tier, float(since)


def tier_call(store: RedisStore, args: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the TIER script for a queued ``tier`` change."""
    site, value = args
    return [f"{store.ns}:tiers", f"{store.ns}:events"], [site, value, store.ttl]


def encode(tier: int, since: float) -> str:
    return json.dumps([tier, since])


def apply(store: RedisStore, site: object, value: object, where: str) -> None:
    """Hand a site's tier read from Redis to the store's listener."""
    callback = store.on_tier_update
    if callback is None:
        return
    parsed = parse_tier(value, time.time())
    if parsed is None or not is_site(site):
        store.skips.skip("tier", where, "is not a tier of a site")
        return
    assert isinstance(site, str)
    callback(site, *parsed)


def on_event(store: RedisStore, rest: str, where: str) -> None:
    """Apply ``<site> <json>`` from ``ns:events``."""
    site, _, value = rest.partition(" ")
    apply(store, site, value, where)


async def load(store: RedisStore) -> None:
    """Load every site's shared tier (HSCAN: a huge hash is read in parts)."""
    if store.on_tier_update is None:
        return
    where = f"{store.ns}:tiers"
    try:
        async for site, value in store.client.hscan_iter(where, count=1000):
            apply(store, site, value, f"{where} {str(site)[:100]}")
    except Exception as exc:
        if is_lost_connection(exc):
            raise
        store.skips.skip("tier", where, f"is not a hash ({short(exc)})")
