"""The Redis backend of the health store: what one crawler learns, all learn.

The keys it uses are described in :mod:`scrapy_sticky_proxy.redis_layout`.

Nothing touches Redis on a healthy request: the crawler reads a local view
(a :class:`MemoryStore` keyed by digest) that is loaded at start and kept
current through ``ns:events``. Bans, proxy health changes and give-ups are
queued and sent by one background task, batched in a pipeline, one command
(a Lua script) per change so that each is written whole, once. If Redis goes
away the crawl goes on with the local view; the queue is kept, a warning is
logged once, and when Redis is back the local view is written back (a Redis
restarted without persistence has forgotten it), the queue replayed and the
view reloaded (messages published meanwhile were missed). If Redis answers
with an error instead, a change it may accept later (OOM, READONLY...) is
kept and retried with a backoff; one it never will (WRONGTYPE) is dropped
with an error naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable
from typing import Any

from .evicted import EvictedFilter
from .memory import MemoryStore
from .redis_layout import (
    BUMP,
    DEFAULT_TTL,
    GAVE_UP,
    HEARTBEAT_INTERVAL,
    MAX_GENERATION,
    PROXY,
    RAISE,
    Skips,
    is_lost_connection,
    is_transient,
    key_digest,
    parse_generation,
    quiet_client,
    redact_url,
    short,
)
from .redis_reader import Reader
from .redis_writer import Writer
from .store import DEFAULT_MAX_KEYS, HealthStore, Rotation

logger = logging.getLogger(__name__)

CLOSE_DRAIN = 5.0  # how long close() lets the sender write what is queued
FETCH_TIMEOUT = 5.0  # a lookup of an evicted key gives up after this
EVICTED_PER_KEY = 4  # evicted burned keys remembered, per STICKY_PROXY_MAX_KEYS


class RedisStore(HealthStore):
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
        self.url = url
        self.ns = namespace
        self.ttl = ttl
        self.local = MemoryStore(max_keys, rotation or Rotation(), gave_up_file)
        # Burned keys the local view had to forget: Redis still knows them.
        self.evicted = EvictedFilter(EVICTED_PER_KEY * max_keys)
        self.local.on_evict = self.evicted.add
        self.spider = spider
        self.client_kwargs = client_kwargs or {}
        self.heartbeat_interval = heartbeat_interval
        self.crawler_id = f"{socket.gethostname()}:{os.getpid()}:{spider}"
        self.connected = False
        self.lost_count = 0
        self.closing = False
        self.client: Any = None
        self.scripts: dict[str, Any] = {}
        self.skips = Skips(redact_url(url))
        self.writer = Writer(self)
        self.reader = Reader(self)
        self._reconnecting = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._warned = False
        self._started = time.time()

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

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the shared state and start the background tasks.
        Raises ``ConnectionError`` naming the URL (without password) if Redis
        cannot be reached."""
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(
            self.url, decode_responses=True, **{**quiet_client(), **self.client_kwargs}
        )
        try:
            await self.client.ping()
            self.scripts = {
                name: self.client.register_script(source)
                for name, source in (
                    ("bump", BUMP),
                    ("proxy", PROXY),
                    ("gave_up", GAVE_UP),
                    ("raise", RAISE),
                )
            }
            await self.reader.subscribe()
            await self._beat()
        except Exception as exc:
            await self.client.aclose()
            raise ConnectionError(
                f"cannot reach Redis at {redact_url(self.url)}: {exc}"
            ) from None
        self.connected = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.writer.run()),
            loop.create_task(self.reader.run()),
            loop.create_task(self._heartbeat()),
        ]

    async def close(self) -> None:
        self.closing = True
        self.writer.wake.set()
        if self._tasks:
            # The sender alone writes: close() sending the queue itself
            # raced a batch in flight and wrote it twice. It gets a bounded
            # time to drain the queue.
            await asyncio.wait(self._tasks[:1], timeout=CLOSE_DRAIN)
            for task in self._tasks:
                task.cancel()
            # Bounded: a client stuck on a dead socket must not hold up the
            # end of the crawl.
            await asyncio.wait(self._tasks, timeout=2)
        if self.writer.pending:
            logger.warning(
                "%d change(s) may not have reached Redis at %s before close",
                len(self.writer.pending),
                redact_url(self.url),
            )
        if self.client is not None:
            for step in (
                self.reader.unsubscribe(),
                self.client.delete(self._crawler_key()),
                self.client.aclose(),
            ):
                if step is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(step, 2)
        await self.local.close()

    # -- background work ---------------------------------------------------

    def _send(self, op: str, *args: Any) -> None:
        self.writer.send(op, args)

    async def flushed(self) -> None:
        """Wait until every queued change is in Redis (or dropped)."""
        await self.writer.drained.wait()

    @property
    def at(self) -> str:
        """The Redis URL for messages (without password)."""
        return redact_url(self.url)

    async def lost(self, exc: Exception) -> None:
        """A command failed: if Redis is gone, keep crawling on the local view
        and wait until it answers again (the sender and the listener both end
        up here; one of them does the waiting)."""
        async with self._reconnecting:
            if self.connected:
                try:
                    # A connection that died in an earlier outage fails once
                    # more after Redis came back: that is not a new outage.
                    await self.client.ping()
                    return
                except Exception:
                    await self._set_connected(False)
                    self.lost_count += 1
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "Redis at %s is unreachable (%s): crawling on the local "
                        "view; changes will be replayed when it returns",
                        redact_url(self.url),
                        type(exc).__name__,
                    )
            delay = 0.05
            while not self.connected and not self.closing:
                # A retry timer, not synchronisation: nothing to wait on but
                # a server that may or may not come back.
                await asyncio.sleep(delay)
                try:
                    await self.client.ping()
                    await self._reseed()
                except Exception:
                    delay = min(delay * 2, 2.0)
                    continue
                await self._set_connected(True)
                self.writer.wake.set()
                logger.info(
                    "Redis at %s is back: replaying %d change(s) and reloading",
                    self.at,
                    len(self.writer.pending),
                )

    async def _reseed(self) -> None:
        """Write the local view back: a Redis that restarted without
        persistence has forgotten what every crawler burned before."""
        entries = list(self.local.items())
        for start in range(0, len(entries), 1000):
            pipe = self.client.pipeline(transaction=False)
            for digest, generation in entries[start : start + 1000]:
                await self.scripts["raise"](
                    keys=[f"{self.ns}:g:{digest}"],
                    args=[min(generation, MAX_GENERATION), self.ttl, MAX_GENERATION],
                    client=pipe,
                )
            for result in await pipe.execute(raise_on_error=False):
                # A key someone else overwrote is skipped (its next bump is
                # dropped and logged); a server refusing writes is not back.
                if isinstance(result, BaseException) and is_transient(result):
                    raise result

    async def notify(self) -> None:
        """Wake whoever waits for the local view or the connection state."""
        async with self._changed:
            self._changed.notify_all()

    async def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        await self.notify()

    async def wait_connected(self, connected: bool = True) -> None:
        """Return once the store knows Redis to be reachable (or not)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.connected is connected)

    async def wait_generation(self, key: str, generation: int) -> None:
        """Return once the local view has *key* at *generation* or later
        (what another process published has arrived)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.generation(key) >= generation)

    def _crawler_key(self) -> str:
        return f"{self.ns}:crawlers:{self.crawler_id}"

    async def _beat(self) -> None:
        host, pid, _ = self.crawler_id.split(":", 2)
        record = {"spider": self.spider, "host": host, "pid": int(pid)}
        record["start"] = self._started
        expiry = max(1, int(self.heartbeat_interval * 3))
        await self.client.set(self._crawler_key(), json.dumps(record), ex=expiry)

    async def _heartbeat(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.heartbeat_interval)
            if self.connected:
                with contextlib.suppress(Exception):
                    await self._beat()
