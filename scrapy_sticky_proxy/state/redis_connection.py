"""The Redis store's connection: open, close, outages and the heartbeat.

:class:`RedisConnection` is the base of :class:`~.redis_store.RedisStore`,
which adds what is done per key. Opening connects, registers the scripts,
loads the shared state and starts the writer, the reader and the heartbeat;
closing gives the writer a bounded time to drain its queue. If Redis goes
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
from typing import TYPE_CHECKING, Any

from .redis_layout import (
    BUMP,
    DECODE,
    GAVE_UP,
    MAX_GENERATION,
    PROXY,
    RAISE,
    Skips,
    is_transient,
    quiet_client,
    redact_url,
)
from .redis_scores import SCORE
from .redis_tiers import TIER

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .redis_reader import Reader
    from .redis_writer import Writer

logger = logging.getLogger(__name__)

CLOSE_DRAIN = 5.0  # how long close() lets the sender write what is queued


class RedisConnection:
    """Connection state shared by the store, its writer and its reader."""

    # Set by RedisStore: the local view, and the two background workers.
    local: MemoryStore
    writer: Writer
    reader: Reader

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        ttl: int,
        spider: str,
        client_kwargs: dict[str, Any] | None,
        heartbeat_interval: float,
    ):
        self.url = url
        self.ns = namespace
        self.ttl = ttl
        self.spider = spider
        self.client_kwargs = client_kwargs or {}
        self.heartbeat_interval = heartbeat_interval
        # Its own heartbeat key: two crawlers of one spider in one process
        # (a CrawlerProcess) wrote one, and the first to close deleted it.
        tag = os.urandom(4).hex()
        self.crawler_id = f"{socket.gethostname()}:{os.getpid()}:{spider}:{tag}"
        self.connected = False
        self.lost_count = 0
        self.closing = False
        self.client: Any = None
        self.scripts: dict[str, Any] = {}
        self.skips = Skips(redact_url(url))
        self._reconnecting = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._warned = False
        self._started = time.time()

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Connect, load the shared state and start the background tasks.
        Raises ``ConnectionError`` naming the URL (without password) if Redis
        cannot be reached."""
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(
            self.url, **{**quiet_client(), **self.client_kwargs, **DECODE}
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
                    ("score", SCORE),
                    ("tier", TIER),
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

    # -- outages ---------------------------------------------------------

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
            async with self.client.pipeline(transaction=False) as pipe:
                for digest, generation in entries[start : start + 1000]:
                    await self.scripts["raise"](
                        keys=[f"{self.ns}:g:{digest}"],
                        args=[
                            min(generation, MAX_GENERATION),
                            self.ttl,
                            MAX_GENERATION,
                        ],
                        client=pipe,
                    )
                results = await pipe.execute(raise_on_error=False)
            for result in results:
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
