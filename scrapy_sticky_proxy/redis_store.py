"""The Redis backend of the health store: what one crawler learns, all learn.

The keys it uses are described in :mod:`scrapy_sticky_proxy.redis_layout`.

Nothing touches Redis on a healthy request: the crawler reads a local view
(a :class:`MemoryStore` keyed by digest) that is loaded at start and kept
current through ``ns:events``. Bans, proxy health changes and give-ups are
queued and sent by one background task, batched in a pipeline. If Redis goes
away the crawl goes on with the local view; the queue is kept, a warning is
logged once, and when Redis is back the local view is written back (a Redis
restarted without persistence has forgotten it), the queue replayed and the
view reloaded (messages published meanwhile were missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from typing import Any

from .redis_layout import (
    BUMP,
    DEFAULT_TTL,
    GAVE_UP_MAX,
    HEARTBEAT_INTERVAL,
    RAISE,
    key_digest,
    quiet_client,
    redact_url,
    scan_pattern,
)
from .store import DEFAULT_MAX_KEYS, HealthStore, MemoryStore, Rotation

logger = logging.getLogger(__name__)


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
        self.spider = spider
        self.client_kwargs = client_kwargs or {}
        self.heartbeat_interval = heartbeat_interval
        self.crawler_id = f"{socket.gethostname()}:{os.getpid()}:{spider}"
        self.connected = False
        self.lost_count = 0
        self._pending: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._reconnecting = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None
        self._bump: Any = None
        self._raise: Any = None
        self._warned = False
        self._closing = False
        self._started = time.time()

    # -- HealthStore -------------------------------------------------------

    def __len__(self) -> int:
        return len(self.local)

    def generation(self, key: str) -> int:
        return self.local.generation(key_digest(key))

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
        self._send("gave_up", json.dumps(record, ensure_ascii=False))

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

        self._client = aioredis.from_url(
            self.url, decode_responses=True, **{**quiet_client(), **self.client_kwargs}
        )
        try:
            await self._client.ping()
            self._bump = self._client.register_script(BUMP)
            self._raise = self._client.register_script(RAISE)
            await self._subscribe()
            await self._beat()
        except Exception as exc:
            await self._client.aclose()
            raise ConnectionError(
                f"cannot reach Redis at {redact_url(self.url)}: {exc}"
            ) from None
        self.connected = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sender()),
            loop.create_task(self._listener()),
            loop.create_task(self._heartbeat()),
        ]

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self.connected and self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), 5)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a client stuck on a dead socket must not hold up the
            # end of the crawl.
            await asyncio.wait(self._tasks, timeout=2)
        if self._client is not None:
            for step in (
                self._pubsub.aclose() if self._pubsub is not None else None,
                self._client.delete(self._crawler_key()),
                self._client.aclose(),
            ):
                if step is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(step, 2)
        await self.local.close()

    # -- background work ---------------------------------------------------

    def _send(self, op: str, *args: Any) -> None:
        self._pending.append((op, args))
        self._drained.clear()
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until every queued change is in Redis."""
        await self._drained.wait()

    async def _sender(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._closing:
                try:
                    await self._flush()
                except Exception as exc:  # connection lost, timeout...
                    await self._lost(exc)
            if not self._pending:
                self._drained.set()

    async def _flush(self) -> None:
        batch = list(self._pending)
        pipe = self._client.pipeline(transaction=False)
        events, gens = f"{self.ns}:events", f"{self.ns}:g:"
        for op, args in batch:
            if op == "bump":
                digest, generation = args
                await self._bump(
                    keys=[gens + digest, events, f"{self.ns}:stats:bumps"],
                    args=[generation, self.ttl, digest],
                    client=pipe,
                )
            elif op == "proxy":
                proxy_id, state = args
                pipe.hset(f"{self.ns}:proxies", proxy_id, state)
                pipe.expire(f"{self.ns}:proxies", self.ttl)
                pipe.publish(events, f"p {proxy_id} {state}")
            elif op == "gave_up":
                # Give-ups wait for a person: no expiry, but a length cap
                # (the oldest go first) so the list cannot grow unbounded.
                pipe.rpush(f"{self.ns}:gave_up", args[0])
                pipe.ltrim(f"{self.ns}:gave_up", -GAVE_UP_MAX, -1)
        results = await pipe.execute()
        # Only now is the batch safely in Redis.
        for _ in batch:
            self._pending.popleft()
        now = time.monotonic()
        index = 0
        for op, args in batch:
            if op == "bump":
                generation, _bumped = results[index]
                self.local.set_generation(args[0], int(generation), now)
                index += 1
            else:
                index += 3 if op == "proxy" else 2

    async def _lost(self, exc: Exception) -> None:
        """A command failed: if Redis is gone, keep crawling on the local view
        and wait until it answers again (the sender and the listener both end
        up here; one of them does the waiting)."""
        async with self._reconnecting:
            if self.connected:
                try:
                    # A connection that died in an earlier outage fails once
                    # more after Redis came back: that is not a new outage.
                    await self._client.ping()
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
            while not self.connected and not self._closing:
                # A retry timer, not synchronisation: nothing to wait on but
                # a server that may or may not come back.
                await asyncio.sleep(delay)
                try:
                    await self._client.ping()
                    await self._reseed()
                except Exception:
                    delay = min(delay * 2, 2.0)
                    continue
                await self._set_connected(True)
                self._wake.set()
                logger.info(
                    "Redis at %s is back: replaying %d change(s) and reloading",
                    redact_url(self.url),
                    len(self._pending),
                )

    async def _reseed(self) -> None:
        """Write the local view back: a Redis that restarted without
        persistence has forgotten what every crawler burned before."""
        entries = list(self.local.items())
        for start in range(0, len(entries), 1000):
            pipe = self._client.pipeline(transaction=False)
            for digest, generation in entries[start : start + 1000]:
                await self._raise(
                    keys=[f"{self.ns}:g:{digest}"],
                    args=[generation, self.ttl],
                    client=pipe,
                )
            await pipe.execute()

    async def _load(self) -> None:
        """Load every shared generation and proxy state into the local view."""
        now = time.monotonic()
        prefix = f"{self.ns}:g:"
        names: list[str] = []
        async for name in self._client.scan_iter(
            match=scan_pattern(prefix), count=1000
        ):
            names.append(name)
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            for name, value in zip(chunk, await self._client.mget(chunk), strict=True):
                if value is not None:
                    self.local.set_generation(name[len(prefix) :], int(value), now)
        if self.on_proxy_update is not None:
            for proxy_id, state in (
                await self._client.hgetall(f"{self.ns}:proxies")
            ).items():
                self._apply_proxy(proxy_id, state)

    def _apply_proxy(self, proxy_id: str, state: str) -> None:
        if self.on_proxy_update is None:
            return
        try:
            failures, retry_at, ever_ok = json.loads(state)
            self.on_proxy_update(proxy_id, int(failures), retry_at, bool(ever_ok))
        except (ValueError, TypeError, KeyError):
            # Another project sharing the namespace, or a proxy we do not have.
            return

    async def _subscribe(self) -> None:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(f"{self.ns}:events")
        # Whatever was published before the subscription took effect (or
        # while Redis was away) is in the keys: load them after subscribing.
        await self._load()

    async def _listener(self) -> None:
        while not self._closing:
            try:
                if self._pubsub is None:
                    await self._subscribe()
                async for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message["data"])
                        async with self._changed:
                            self._changed.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = None
                await self._lost(exc)

    def _on_message(self, data: str) -> None:
        kind, _, rest = data.partition(" ")
        if kind == "g":
            digest, _, generation = rest.partition(" ")
            with contextlib.suppress(ValueError):
                self.local.set_generation(digest, int(generation), time.monotonic())
        elif kind == "p":
            proxy_id, _, state = rest.partition(" ")
            self._apply_proxy(proxy_id, state)

    async def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        async with self._changed:
            self._changed.notify_all()

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
        await self._client.set(self._crawler_key(), json.dumps(record), ex=expiry)

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.heartbeat_interval)
            if self.connected:
                with contextlib.suppress(Exception):
                    await self._beat()
