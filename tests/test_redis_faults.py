"""The Redis backend under partial failures: a server that answers, but not
with what the store expects (issue 10, defects 7-10). Everything runs
against a real redis-server; commands are counted with INFO commandstats."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.state.redis_layout import key_digest
from scrapy_sticky_proxy.state.redis_store import RedisStore

from .redis_server import RedisServer
from .test_redis_store import NS, opened, sync_client, within


def calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (failed and rejected calls included)."""
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(s["calls"]) for name, s in stats.items()}


def delta(before: dict[str, int], after: dict[str, int], *names: str) -> int:
    return sum(after.get(n, 0) - before.get(n, 0) for n in names)


WRITES = ("evalsha", "eval", "rpush", "ltrim", "hset", "expire", "publish")


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll *condition* (a state of the server, which has no event to wait
    on) until it holds; fail after *seconds*."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await within(poll(), seconds)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- defect 7: errors that are not a lost connection ------------------------


@deferred_f_from_coro_f
async def test_a_wrong_typed_key_drops_that_change_alone_and_once(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else wrote a hash where a generation belongs: that bump can
    never succeed. It is dropped with one error naming the key; the rest of
    the batch is written exactly once, and the sender does not loop."""
    client = sync_client(redis_db)
    bad = f"{NS}:g:{key_digest('poisoned')}"
    client.hset(bad, "someone", "else")
    async with opened(redis_db, heartbeat_interval=60) as store:
        before = calls(client)
        store.record_give_up({"url": "http://x/1", "reasons": ["status/403"]})
        store.ban("poisoned", 0, 0.0)
        store.ban("fine", 0, 0.0)
        store.record_give_up({"url": "http://x/2", "reasons": ["status/403"]})
        await within(store.flushed())
        after = calls(client)
    records = [json.loads(r)["url"] for r in client.lrange(f"{NS}:gave_up", 0, -1)]
    assert records == ["http://x/1", "http://x/2"]
    assert client.get(f"{NS}:g:{key_digest('fine')}") == "1"
    assert client.type(bad) == "hash"
    # One command per change, each sent once.
    assert delta(before, after, *WRITES) <= 4 * 3, after
    assert len([e for e in errors(caplog) if bad in e]) == 1, errors(caplog)


@pytest.mark.parametrize("fault", ["oom", "readonly"])
@deferred_f_from_coro_f
async def test_a_server_refusing_writes_is_retried_with_backoff(
    fault: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    refused_port: Callable[[], int],
) -> None:
    """OOM (maxmemory reached) or READONLY (a failover made it a replica):
    the changes are kept and retried with a backoff, not at once in a loop;
    once the server accepts writes again each is written exactly once."""
    server = RedisServer(tmp_path).start()
    client = sync_client(server.url)
    try:
        async with opened(server.url, heartbeat_interval=60) as store:
            if fault == "oom":
                client.config_set("maxmemory", 1)
            else:
                # A master that is not there: the replica never syncs.
                master = str(refused_port())
                client.execute_command("REPLICAOF", "127.0.0.1", master)
            start = calls(client)
            store.ban("k", 0, 0.0)
            store.record_give_up({"url": "http://x/1", "reasons": ["status/403"]})
            store.record_give_up({"url": "http://x/2", "reasons": ["status/403"]})
            await until(lambda: delta(start, calls(client), *WRITES) >= 1)
            # An observation window, not synchronisation: how many times the
            # sender tries while the server keeps refusing.
            first = calls(client)
            await asyncio.sleep(1.0)
            tries = delta(first, calls(client), *WRITES)
            assert tries <= 3 * 10, tries
            if fault == "oom":
                client.config_set("maxmemory", 0)
            else:
                client.execute_command("REPLICAOF", "NO", "ONE")
            await within(store.flushed(), 15)
        assert client.get(f"{NS}:g:{key_digest('k')}") == "1"
        records = client.lrange(f"{NS}:gave_up", 0, -1)
        assert [json.loads(r)["url"] for r in records] == ["http://x/1", "http://x/2"]
        assert errors(caplog) == []
    finally:
        server.stop()


@deferred_f_from_coro_f
async def test_script_flush_is_survived(redis_db: str) -> None:
    client = sync_client(redis_db)
    async with opened(redis_db, heartbeat_interval=60) as store:
        store.ban("a", 0, 0.0)
        await within(store.flushed())
        client.script_flush()
        before = calls(client)
        store.ban("b", 0, 0.0)
        store.record_give_up({"url": "http://x/1"})
        await within(store.flushed())
        assert delta(before, calls(client), *WRITES) <= 2 * 3
    assert client.get(f"{NS}:g:{key_digest('b')}") == "1"
    assert client.llen(f"{NS}:gave_up") == 1


@deferred_f_from_coro_f
async def test_an_unreadable_value_and_a_dropped_subscriber_are_survived(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A generation that is not a number, then the subscriber's connection
    killed: the listener resubscribes a bounded number of times, and
    sharing works again."""
    client = sync_client(redis_db)
    async with opened(redis_db) as a, opened(redis_db) as b:
        client.set(f"{NS}:g:{key_digest('garbage')}", "not a number")
        before = calls(client)
        client.client_kill_filter(_type="pubsub")
        a.ban("shared", 0, 0.0)
        await within(a.flushed())
        await within(b.wait_generation("shared", 1), 10)
        after = calls(client)
    # Each store resubscribes (and rescans) once or a few times, not in a loop.
    assert delta(before, after, "subscribe") <= 2 * 3, after
    assert delta(before, after, "scan") <= 2 * 3, after
    assert any("Redis" in r.getMessage() for r in caplog.records if r.levelno >= 30)


@deferred_f_from_coro_f
async def test_a_record_with_a_lone_surrogate_does_not_stall_the_queue(
    redis_db: str,
) -> None:
    """A session key may hold a lone surrogate (any str is a key); its
    give-up record must reach Redis, not fail to encode on every retry."""
    client = sync_client(redis_db)
    async with opened(redis_db, heartbeat_interval=60) as store:
        store.record_give_up({"url": "http://x/1", "key": "a\ud800b"})
        store.ban("after", 0, 0.0)
        await within(store.flushed())
    [record] = client.lrange(f"{NS}:gave_up", 0, -1)
    assert json.loads(record)["url"] == "http://x/1"
    assert client.get(f"{NS}:g:{key_digest('after')}") == "1"


# -- defect 8: pub/sub on every allowed redis-py version ---------------------


@deferred_f_from_coro_f
async def test_an_idle_subscription_outlives_the_socket_timeout(redis_db: str) -> None:
    """redis-py 5 applied socket_timeout to listen(): every idle
    socket_timeout the store reconnected, resubscribed and rescanned."""
    client = sync_client(redis_db)
    kwargs: dict[str, Any] = {"client_kwargs": {"socket_timeout": 0.1}}
    async with opened(redis_db, **kwargs) as a, opened(redis_db) as b:
        before = calls(client)
        # An observation window: ten socket timeouts of idleness.
        await asyncio.sleep(1.0)
        after = calls(client)
        b.ban("k", 0, 0.0)
        await within(a.wait_generation("k", 1))
    assert delta(before, after, "subscribe", "scan", "ping") == 0, after


# -- defect 9: close() racing the sender ---------------------------------------


@deferred_f_from_coro_f
async def test_close_while_the_sender_is_mid_flush_writes_each_change_once(
    redis_db: str,
) -> None:
    client = sync_client(redis_db)
    store = RedisStore(redis_db, NS, heartbeat_interval=60)
    await store.open()
    try:
        # Redis holds every write for a second: the sender's batch is sent
        # and waits in the server while close() runs.
        client.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        store.record_give_up({"url": "http://x/1"})
        await until(
            lambda: any(
                "b" in c["flags"] and c["cmd"] != "client" for c in client.client_list()
            )
        )
    finally:
        await within(store.close(), 10)
    assert client.llen(f"{NS}:gave_up") == 1


# -- defect 10: past STICKY_PROXY_MAX_KEYS -------------------------------------


def lookup(store: RedisStore, key: str) -> Any:
    """What the middleware does before acquire(): None, or an awaitable that
    brings the key's shared generation in."""
    method = getattr(store, "lookup", None)
    return None if method is None else method(key)


@deferred_f_from_coro_f
async def test_a_burned_key_evicted_from_the_local_view_is_not_reused(
    redis_db: str,
) -> None:
    client = sync_client(redis_db)
    async with opened(redis_db, max_keys=10) as store:
        for i in range(40):
            store.ban(f"k{i}", 0, 0.0)
        store.ban("k0", 1, 0.0)
        await within(store.flushed())
        assert len(store) == 10
        before = calls(client)
        # Never-burned keys: no round trip (a false positive costs one GET).
        assert sum(lookup(store, f"fresh{i}") is not None for i in range(2000)) <= 4
        generations = []
        for i in range(40):
            pending = lookup(store, f"k{i}")
            if pending is not None:
                await within(pending)
            generations.append(store.acquire(f"k{i}", 0.0)[0])
        assert generations == [2] + [1] * 39
        # At most one GET per key (the local view holds 10 keys, so each
        # answer evicts another); the ten just fetched need none.
        assert delta(before, calls(client), "get") <= 40
        assert [lookup(store, f"k{i}") for i in range(30, 40)] == [None] * 10


def test_the_evicted_filter_remembers_the_latest_evictions() -> None:
    from scrapy_sticky_proxy.state.evicted import EvictedFilter

    evicted = EvictedFilter(1024)
    assert not evicted and key_digest("k0") not in evicted
    digests = [key_digest(f"k{i}") for i in range(3000)]
    for digest in digests:
        evicted.add(digest)
    # The latest capacity are always there; the oldest are forgotten once
    # two filters' worth came after them.
    assert all(d in evicted for d in digests[-1024:])
    assert sum(d in evicted for d in digests[:500]) <= 5
    assert sum(key_digest(f"fresh{i}") in evicted for i in range(10_000)) <= 30


@deferred_f_from_coro_f
async def test_a_write_cut_short_leaves_no_pipeline_open(redis_db: str) -> None:
    # Redis stops answering while the writer sends a batch, and the batch is
    # cancelled (as close() does after its drain time). redis-py loads the
    # batch's scripts on a connection it takes before the part of execute()
    # that gives it back: the pipeline kept it, and asyncio logged "Unclosed
    # Pipeline client" when it was collected.
    import gc

    from redis.asyncio.client import Pipeline

    def holding() -> list[Pipeline]:
        return [
            obj
            for obj in gc.get_objects()
            if isinstance(obj, Pipeline) and obj.connection is not None
        ]

    async with opened(redis_db) as store:
        sync_client(redis_db).execute_command("CLIENT", "PAUSE", 1000, "ALL")
        store.ban("http://x/1", 0, 0.0)
        writer = store._tasks[0]
        # Bounded: the batch hangs until the pause ends, well after this.
        await asyncio.wait([writer], timeout=0.3)
        assert not writer.done() and len(store.writer.pending) == 1
        writer.cancel()
        await asyncio.wait([writer], timeout=2)
        assert writer.cancelled()
        assert holding() == []


@deferred_f_from_coro_f
async def test_a_long_outage_keeps_a_bounded_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is away, changes queue up to the writer's bound; past it
    the oldest goes for each new one, counted, with one warning. Before,
    the queue grew with every ban for as long as the outage lasted. When
    Redis returns, the local view is written back: no burned session is
    forgotten."""
    server = RedisServer(tmp_path).start()
    try:
        async with opened(server.url, heartbeat_interval=60) as store:
            store.writer.max_pending = 50
            server.kill()
            await until(lambda: not store.connected)  # the listener saw it
            for i in range(200):
                store.ban(f"k{i}", 0, 0.0)
            assert len(store.writer.pending) == 50
            assert store.counters()["redis/dropped_changes"] == 150
            warnings = [r for r in caplog.records if "not taken changes" in r.message]
            assert len(warnings) == 1
            server.start()
            await until(lambda: store.connected, 15)  # the view written back
            await within(store.flushed(), 15)
        client = sync_client(server.url)
        got = [client.get(f"{NS}:g:{key_digest(f'k{i}')}") for i in range(200)]
        assert got == ["1"] * 200, got
    finally:
        server.stop()
