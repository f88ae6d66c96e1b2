"""What a :class:`RedisStore` reads: the namespace loaded at (re)subscription
and the ``ns:events`` messages after it, applied to the local view.

Everything read here was written by someone else and is untrusted: a value
that does not parse is skipped (one warning per load), never raised out of
the load, which runs again on every resubscription. The pub/sub read is
bounded (``get_message`` with a timeout, not ``listen()``, which redis-py 5
cut after ``socket_timeout``), and failures resubscribe with a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from .redis_layout import is_lost_connection, parse_generation, scan_pattern, short
from .redis_writer import backoff

if TYPE_CHECKING:
    from .redis_store import RedisStore

logger = logging.getLogger(__name__)

LISTEN_POLL = 30.0  # longest single pub/sub read


class Reader:
    def __init__(self, store: RedisStore):
        self.store = store
        self.pubsub: Any = None

    async def subscribe(self) -> None:
        store = self.store
        self.pubsub = store.client.pubsub()
        await self.pubsub.subscribe(f"{store.ns}:events")
        # Whatever was published before the subscription took effect (or
        # while Redis was away) is in the keys: load them after subscribing.
        await self.load()
        await store.notify()

    async def unsubscribe(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            await pubsub.aclose()

    async def run(self) -> None:
        store, failures = self.store, 0
        while not store.closing:
            try:
                if self.pubsub is None:
                    await self.subscribe()
                message = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=LISTEN_POLL
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self.unsubscribe()
                self.pubsub = None
                failures += 1
                if failures == 1:
                    logger.warning(
                        "Redis pub/sub at %s failed (%s): resubscribing with backoff",
                        store.at,
                        short(exc),
                    )
                if is_lost_connection(exc):
                    await store.lost(exc)
                # A retry timer: nothing to wait on but a server changing.
                await asyncio.sleep(backoff(failures))
                continue
            if failures:
                logger.info("Redis pub/sub at %s is listening again", store.at)
                failures = 0
            if message is not None and message.get("type") == "message":
                self.on_message(message["data"])
                await store.notify()

    async def load(self) -> None:
        """Load every shared generation and proxy state into the local view."""
        store = self.store
        now = time.monotonic()
        prefix = f"{store.ns}:g:"
        names: list[str] = []
        async for name in store.client.scan_iter(
            match=scan_pattern(prefix), count=1000
        ):
            names.append(name)
        skipped = 0
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            values = await store.client.mget(chunk)
            for name, value in zip(chunk, values, strict=True):
                generation = parse_generation(value)
                if generation is not None:
                    store.local.set_generation(name[len(prefix) :], generation, now)
                elif value is not None:
                    skipped += 1
        if store.on_proxy_update is not None:
            try:
                states = await store.client.hgetall(f"{store.ns}:proxies")
            except Exception as exc:
                if is_lost_connection(exc):
                    raise
                states, skipped = {}, skipped + 1  # WRONGTYPE: not a hash
            for proxy_id, state in states.items():
                self.apply_proxy(proxy_id, state)
        if skipped:
            logger.warning(
                "Skipped %d unreadable value(s) under %s: in Redis at %s",
                skipped,
                store.ns,
                store.at,
            )

    def on_message(self, data: Any) -> None:
        if not isinstance(data, str):
            return
        kind, _, rest = data.partition(" ")
        if kind == "g":
            digest, _, value = rest.partition(" ")
            generation = parse_generation(value)
            if generation is not None:
                self.store.local.set_generation(digest, generation, time.monotonic())
        elif kind == "p":
            proxy_id, _, state = rest.partition(" ")
            self.apply_proxy(proxy_id, state)

    def apply_proxy(self, proxy_id: str, state: str) -> None:
        callback = self.store.on_proxy_update
        if callback is None:
            return
        try:
            failures, retry_at, ever_ok = json.loads(state)
            callback(proxy_id, int(failures), retry_at, bool(ever_ok))
        except (ValueError, TypeError, KeyError):
            # Another project sharing the namespace, or a proxy we do not have.
            return
