"""The one task that writes a :class:`RedisStore`'s changes to Redis.

Changes (generation bumps, error scores, proxy health, give-up records) are
queued by the crawl and sent in batches, one pipeline per batch and one
command (a Lua script from :mod:`redis_layout` or :mod:`redis_scores`) per
change, so that the reply of each says whether that change is in Redis: it
is written whole, once. What happens to a change Redis did not take depends
on why:

- no answer (connection lost, timeout): the store's outage handling waits
  for Redis to return, then the queue is replayed;
- an error Redis may get over (OOM, READONLY, LOADING, NOSCRIPT...): the
  change stays queued and is retried with a backoff (0.05 s doubling to 5 s),
  one warning per episode;
- any other error (WRONGTYPE from a key someone else wrote): retrying cannot
  help, so the change is dropped with one error naming it.

While Redis is away the queue holds at most :data:`MAX_PENDING` changes
(about 20 MB); past that, the oldest change not being sent goes for each
new one, counted in ``redis/dropped_changes`` with one warning per
outage. Before, it grew with every ban and give-up for as long as the
outage lasted (3,378 after a few minutes of one crawl), then went to Redis
in one burst. What is lost is little: the burned sessions of the local
view are written back when Redis returns, and give-up records are in
``STICKY_PROXY_GAVE_UP_FILE`` when it is set.

A bump the script refuses (the stored value is not a generation, or the
bump would pass ``MAX_GENERATION``) is a conflict: Redis keeps what it
holds, nothing is announced, the local view keeps its own generation, and
the refusal counts in ``redis/skipped/bump``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import redis_scores, redis_tiers
from .redis_layout import (
    GAVE_UP_MAX,
    MAX_GENERATION,
    is_lost_connection,
    is_transient,
    parse_generation,
    short,
)

if TYPE_CHECKING:
    from .redis_store import RedisStore

logger = logging.getLogger(__name__)

BATCH = 1000  # changes per pipeline
MAX_PENDING = 100_000  # changes queued at most (a long outage)

Change = tuple[str, tuple[Any, ...]]


def backoff(failures: int) -> float:
    """Seconds to wait after *failures* failed attempts in a row."""
    return float(min(5.0, 0.05 * 2 ** min(failures - 1, 7)))


class Writer:
    def __init__(self, store: RedisStore):
        self.store = store
        self.pending: deque[Change] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.dropped = 0  # changes Redis refused for good, or not kept
        self.max_pending = MAX_PENDING
        self._sending = 0  # changes at the queue's head in a pipeline now
        self._overflowed = False  # in this outage: warned

    def send(self, op: str, args: tuple[Any, ...]) -> None:
        pending = self.pending
        if len(pending) >= self.max_pending and len(pending) > self._sending:
            del pending[self._sending]  # the oldest that is not being sent
            self.dropped += 1
            if not self._overflowed:
                self._overflowed = True
                logger.warning(
                    "Redis at %s has not taken changes for a while: %d are "
                    "queued, and from now on the oldest goes for each new one "
                    "(sticky_proxy/redis/dropped_changes); burned sessions are "
                    "written back from the local view when it returns",
                    self.store.at,
                    self.max_pending,
                )
        pending.append((op, args))
        self.drained.clear()
        self.wake.set()

    async def run(self) -> None:
        """Write what is queued until the store closes and the queue is
        empty (close() waits for this, a bounded time, and never writes
        itself: two writers sent one batch twice)."""
        store, failures = self.store, 0
        while True:
            if not self.pending:
                self.drained.set()
                if store.closing:
                    return
                await self.wake.wait()
                self.wake.clear()
                continue
            if store.closing and not store.connected:
                return
            try:
                error = await self._flush()
            except Exception as exc:  # connection lost, timeout, OOM on load
                error = exc
                if is_lost_connection(exc) and not store.closing:
                    await store.lost(exc)
            if error is None:
                if failures:
                    logger.info("Redis at %s accepts changes again", store.at)
                failures = 0
                self._overflowed = False
                continue
            failures += 1
            if failures == 1 and not is_lost_connection(error):
                logger.warning(
                    "Redis at %s refuses changes (%s): %d kept, retried with backoff",
                    store.at,
                    short(error),
                    len(self.pending),
                )
            # A retry timer: nothing to wait on but a server changing its mind.
            await asyncio.sleep(backoff(failures))

    async def _flush(self) -> BaseException | None:
        """Send the oldest queued changes in one pipeline. Changes written
        leave the queue, and so do poison ones (an error logged for each);
        those Redis may accept later stay, and the first such error is
        returned."""
        store = self.store
        batch = list(itertools.islice(self.pending, BATCH))
        # send() leaves these alone until their replies are read.
        self._sending = len(batch)
        try:
            results = await self._execute(batch)
        finally:
            self._sending = 0
        now = time.monotonic()
        kept: list[Change] = []
        error: BaseException | None = None
        for (op, args), result in zip(batch, results, strict=True):
            self.pending.popleft()
            if not isinstance(result, BaseException):
                if op == "bump":
                    self._bumped(args[0], result, now)
                elif op == "score" and redis_scores.refused(result):
                    where = f"{store.ns}:e:{args[0]}"
                    store.skips.skip("score", where, "holds no score: left as is")
            elif is_transient(result):
                kept.append((op, args))
                error = error or result
            else:
                self.dropped += 1
                logger.error(
                    "Redis at %s refuses a change for good, dropped: %s (%s)",
                    store.at,
                    self._describe(op, args),
                    short(result),
                )
        self.pending.extendleft(reversed(kept))
        return error

    async def _execute(self, batch: list[Change]) -> list[Any]:
        """Send *batch* in one pipeline; a reply (or error) per change."""
        store = self.store
        ns, scripts = store.ns, store.scripts
        events = f"{ns}:events"
        # A context: redis-py takes a connection to load the scripts before
        # the part of execute() that gives it back; cut short there (Redis
        # gone, close() cancelling), the pipeline kept it open.
        async with store.client.pipeline(transaction=False) as pipe:
            for op, args in batch:
                if op == "bump":
                    digest, generation = args
                    keys = [f"{ns}:g:{digest}", events, f"{ns}:stats:bumps"]
                    argv = [generation, store.ttl, digest, MAX_GENERATION]
                elif op == "score":
                    keys, argv = redis_scores.score_call(store, args)
                elif op == "proxy":
                    keys, argv = [f"{ns}:proxies", events], [*args, store.ttl]
                elif op == "tier":
                    keys, argv = redis_tiers.tier_call(store, args)
                else:
                    keys, argv = [f"{ns}:gave_up"], [args[0], GAVE_UP_MAX]
                await scripts[op](keys=keys, args=argv, client=pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _bumped(self, digest: str, result: Any, now: float) -> None:
        """Adopt what the bump script answered: the key's generation in
        Redis, or -1 for a conflict it left alone."""
        answer = result[0] if isinstance(result, list) and result else None
        generation = parse_generation(str(answer)) if type(answer) is int else None
        if generation is None:
            where = f"{self.store.ns}:g:{digest}"
            reason = "holds no generation below the cap: left as is, not announced"
            self.store.skips.skip("bump", where, reason)
            return
        self.store.local.set_generation(digest, generation, now)

    def _describe(self, op: str, args: tuple[Any, ...]) -> str:
        ns = self.store.ns
        if op == "bump":
            return f"generation bump of {ns}:g:{args[0]}"
        if op == "score":
            return f"error score of {ns}:e:{args[0]}"
        if op == "proxy":
            return f"health of proxy {args[0]} in {ns}:proxies"
        if op == "tier":
            return f"tier of site {args[0]} in {ns}:tiers"
        return f"give-up record {args[0][:300]} for {ns}:gave_up"
