"""What a :class:`RedisStore` reads: the namespace loaded at (re)subscription
and the ``ns:events`` messages after it, applied to the local view.

Everything read here was written by someone else and is untrusted: a value
that does not parse (see :mod:`redis_layout`) is skipped and counted in the
store's ``redis/skipped`` counters (one warning per kind), never raised out
of the load, which runs again on every resubscription, nor out of the
listener. The pub/sub read is
bounded (``get_message`` with a timeout, not ``listen()``, which redis-py 5
cut after ``socket_timeout``), and failures resubscribe with a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from . import redis_scores, redis_tiers
from .redis_layout import (
    MAX_VALUE_LEN,
    is_digest,
    is_lost_connection,
    parse_generation,
    parse_proxy_state,
    scan_pattern,
    short,
)
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
                try:
                    self.on_message(message["data"])
                except Exception as exc:  # a value no check foresaw: not fatal
                    where = f"{store.ns}:events"
                    store.skips.skip("event", where, f"failed ({type(exc).__name__})")
                await store.notify()

    async def load(self) -> None:
        """Load every shared generation, score and proxy state into the
        local view."""
        store, skips = self.store, self.store.skips
        now = time.monotonic()
        prefix = f"{store.ns}:g:"
        names: dict[str, None] = {}  # SCAN may return a name twice
        async for name in store.client.scan_iter(
            match=scan_pattern(prefix), count=1000
        ):
            names[name] = None
        missing: list[str] = []
        chunks = list(names)
        for start in range(0, len(chunks), 1000):
            chunk = chunks[start : start + 1000]
            values = await store.client.mget(chunk)
            for name, value in zip(chunk, values, strict=True):
                digest, generation = name[len(prefix) :], parse_generation(value)
                if value is None:
                    missing.append(name)  # expired since, or not a string
                elif generation is None:
                    skips.skip("generation", name, "is not a generation")
                elif not is_digest(digest):
                    skips.skip("generation", name, "is not named by a digest")
                else:
                    store.local.set_generation(digest, generation, now)
        if missing:
            async with store.client.pipeline(transaction=False) as pipe:
                for name in missing:
                    pipe.type(name)
                kinds = await pipe.execute()
            for name, kind in zip(missing, kinds, strict=True):
                if kind != "none":
                    skips.skip("generation", name, f"is a {kind}, not a string")
        await redis_scores.load(store)
        await redis_tiers.load(store)
        if store.on_proxy_update is not None:
            where = f"{store.ns}:proxies"
            try:
                states = await store.client.hgetall(where)
            except Exception as exc:
                if is_lost_connection(exc):
                    raise
                states = {}
                skips.skip("proxy", where, f"is not a hash ({short(exc)})")
            for proxy_id, state in states.items():
                self.apply_proxy(proxy_id, state, "proxy", f"{where} {proxy_id}")

    def on_message(self, data: Any) -> None:
        skip = self.store.skips.skip
        where = f"{self.store.ns}:events"
        if not isinstance(data, str) or len(data) > MAX_VALUE_LEN:
            skip("event", where, "carried an unreadable message")
            return
        kind, _, rest = data.partition(" ")
        if kind == "g":
            digest, _, value = rest.partition(" ")
            generation = parse_generation(value)
            if generation is None or not is_digest(digest):
                skip("event", f"{where} {data}", "is not a generation of a digest")
                return
            self.store.local.set_generation(digest, generation, time.monotonic())
        elif kind == "e":
            redis_scores.on_event(self.store, rest, f"{where} {data}")
        elif kind == "t":
            redis_tiers.on_event(self.store, rest, f"{where} {data}")
        elif kind == "p":
            proxy_id, _, state = rest.partition(" ")
            self.apply_proxy(proxy_id, state, "event", f"{where} {data}")
        else:
            skip("event", f"{where} {data}", "is not a message of ours")

    def apply_proxy(self, proxy_id: str, state: str, kind: str, where: str) -> None:
        callback = self.store.on_proxy_update
        if callback is None:
            return
        parsed = parse_proxy_state(state, time.time())
        if parsed is None:
            self.store.skips.skip(kind, where, "is not a proxy state")
            return
        try:
            callback(proxy_id, *parsed)
        except KeyError:  # a proxy another project has, not this one
            pass
        except ValueError:
            self.store.skips.skip(kind, where, "is not a proxy state")
