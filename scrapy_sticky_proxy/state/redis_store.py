"""The Redis backend of the health store: what one crawler learns, all learn.

The keys it uses are described in :mod:`.redis_layout`.

Nothing touches Redis on a healthy request: the crawler reads a local view
(a :class:`MemoryStore` keyed by digest) that is loaded at start and kept
current through ``ns:events`` (:mod:`.redis_reader`). Bans, error scores
(:mod:`.redis_scores`), proxy health changes and give-ups are queued and
sent by one background task (:mod:`.redis_writer`), batched in a pipeline,
one command (a Lua script) per change so that each is written whole, once.
If Redis answers with an error, a change it may accept later (OOM,
READONLY...) is kept and retried with a backoff; one it never will
(WRONGTYPE) is dropped with an error naming it.
Opening, closing and outages are :mod:`.redis_connection`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

from . import redis_tiers
from .evicted import EvictedFilter
from .memory import MemoryStore
from .redis_connection import RedisConnection
from .redis_layout import (
    DEFAULT_TTL,
    HEARTBEAT_INTERVAL,
    is_lost_connection,
    key_digest,
    parse_generation,
    short,
)
from .redis_reader import Reader
from .redis_writer import Writer
from .store import DEFAULT_MAX_KEYS, HealthStore, Rotation

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0  # a lookup of an evicted key gives up after this
EVICTED_PER_KEY = 4  # evicted burned keys remembered, per STICKY_PROXY_MAX_KEYS


class RedisStore(RedisConnection, HealthStore):
    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        ttl: int = DEFAULT_TTL,
        max_keys: int = DEFAULT_MAX_KEYS,
        rotation: Rotation | None = None,
        gave_up_file: str | None = None,
        spider: str = "",
        client_kwargs: dict[str, Any] | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ):
        super().__init__(
            url,
            namespace,
            ttl=ttl,
            spider=spider,
            client_kwargs=client_kwargs,
            heartbeat_interval=heartbeat_interval,
        )
        self.local = MemoryStore(max_keys, rotation or Rotation(), gave_up_file)
        # Burned keys the local view had to forget: Redis still knows them.
        self.evicted = EvictedFilter(EVICTED_PER_KEY * max_keys)
        self.local.on_evict = self.evicted.add
        self.writer = Writer(self)
        self.reader = Reader(self)

    # -- HealthStore -------------------------------------------------------

    def __len__(self) -> int:
        return len(self.local)

    def generation(self, key: str) -> int:
        return self.local.generation(key_digest(key))

    def counters(self) -> dict[str, int]:
        return {"redis/dropped_changes": self.writer.dropped, **self.skips.counters()}

    def lookup(self, key: str) -> Awaitable[None] | None:
        if not self.evicted:  # nothing forgotten yet: the usual case
            return None
        digest = key_digest(key)
        if digest in self.local or digest not in self.evicted:
            return None
        return self._fetch(digest)

    async def _fetch(self, digest: str) -> None:
        """Bring back a burned key the local view evicted. Without an answer
        the crawl goes on with the local view, as during an outage."""
        if not self.connected:
            return
        name = f"{self.ns}:g:{digest}"
        try:
            value = await asyncio.wait_for(self.client.get(name), FETCH_TIMEOUT)
        except Exception as exc:
            if is_lost_connection(exc):  # timeouts included
                logger.debug("Redis lookup of an evicted key failed: %s", short(exc))
                return
            value = None  # WRONGTYPE: someone else's key
            self.skips.skip("generation", name, f"is not a string ({short(exc)})")
        generation = parse_generation(value) if value is not None else 0
        if generation is None:
            self.skips.skip("generation", name, "is not a generation")
        # Tracked even at generation 0 (expired in Redis, or a false
        # positive of the filter): the next request needs no lookup.
        self.local.adopt(digest, generation or 0, time.monotonic())

    def acquire(self, key: str, now: float) -> tuple[int, bool]:
        digest = key_digest(key)
        generation, rotated = self.local.acquire(digest, now)
        if rotated:
            self._send("bump", digest, generation - 1)
        return generation, rotated

    def ban(self, key: str, generation: int, now: float) -> int:
        digest = key_digest(key)
        before = self.local.generation(digest)
        after = self.local.ban(digest, generation, now)
        if after > before:
            self._send("bump", digest, generation)
        return after

    def score(self, key: str, generation: int) -> int:
        return self.local.score(key_digest(key), generation)

    def add_score(self, key: str, generation: int, delta: int, now: float) -> int:
        digest = key_digest(key)
        before = self.local.score(digest, generation)
        after = self.local.add_score(digest, generation, delta, now)
        if after != before:
            self._send("score", digest, generation, delta)
        return after

    def record_give_up(self, record: dict[str, Any]) -> None:
        self.local.record_give_up(record)
        # ASCII JSON: a lone surrogate (keys are any str) cannot be encoded
        # for Redis, and would fail its batch on every retry.
        self._send("gave_up", json.dumps(record))

    def proxy_changed(
        self, proxy_id: str, failures: int, retry_at: float | None, ever_ok: bool
    ) -> None:
        """Share a static proxy's new health (called on state changes only)."""
        self._send("proxy", proxy_id, json.dumps([failures, retry_at, ever_ok]))

    def tier_changed(self, site: str, tier: int, since: float) -> None:
        self._send("tier", site, redis_tiers.encode(tier, since))

    # -- queued changes --------------------------------------------------

    def _send(self, op: str, *args: Any) -> None:
        self.writer.send(op, args)

    async def flushed(self) -> None:
        """Wait until every queued change is in Redis (or dropped)."""
        await self.writer.drained.wait()

    async def wait_generation(self, key: str, generation: int) -> None:
        """Return once the local view has *key* at *generation* or later
        (what another process published has arrived)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.generation(key) >= generation)
