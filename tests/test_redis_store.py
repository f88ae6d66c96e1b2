"""The Redis backend against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.state.redis_layout import key_digest, redact_url
from scrapy_sticky_proxy.state.redis_store import RedisStore

from .conftest import assert_absent

NS = "test"


@asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[RedisStore]:
    store = RedisStore(url, NS, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


async def within(awaitable: Any, seconds: float = 5.0) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


@deferred_f_from_coro_f
async def test_ban_reaches_another_process_and_redis(redis_db: str) -> None:
    async with opened(redis_db) as a, opened(redis_db) as b:
        assert a.ban("http://x/1", 0, 0.0) == 1
        await within(a.flushed())
        await within(b.wait_generation("http://x/1", 1))
        assert b.generation("http://x/1") == 1
        assert b.acquire("http://x/1", 0.0) == (1, False)
    client = sync_client(redis_db)
    assert client.get(f"{NS}:g:{key_digest('http://x/1')}") == "1"
    assert 0 < client.ttl(f"{NS}:g:{key_digest('http://x/1')}") <= 86400
    # Keys are digests: the URL itself is not stored.
    assert not [k for k in client.keys("*") if "http" in k]


@deferred_f_from_coro_f
async def test_a_crawler_started_later_loads_what_was_burned(redis_db: str) -> None:
    async with opened(redis_db) as a:
        for i in range(50):
            a.ban(f"k{i}", 0, 0.0)
        a.ban("k0", 1, 0.0)
        await within(a.flushed())
    async with opened(redis_db) as late:
        assert [late.generation(f"k{i}") for i in range(3)] == [2, 1, 1]
        assert len(late) == 50


@deferred_f_from_coro_f
async def test_double_bans_bump_once(redis_db: str) -> None:
    """1000 keys, each banned at generation 0 by two clients at once."""
    async with opened(redis_db) as a, opened(redis_db) as b:
        for i in range(1000):
            a.ban(f"key{i}", 0, 0.0)
            b.ban(f"key{i}", 0, 0.0)
        await within(asyncio.gather(a.flushed(), b.flushed()))
        assert {a.generation(f"key{i}") for i in range(1000)} == {1}
        assert {b.generation(f"key{i}") for i in range(1000)} == {1}
    assert sync_client(redis_db).get(f"{NS}:stats:bumps") == "1000"


@deferred_f_from_coro_f
async def test_slower_process_adopts_the_faster_ones_generation(redis_db: str) -> None:
    async with opened(redis_db) as a, opened(redis_db) as b:
        a.ban("k", 0, 0.0)
        a.ban("k", 1, 0.0)
        await within(a.flushed())
        # b has not heard yet (or has): its own late ban of generation 0
        # must not bump again, and it ends on a's generation.
        b.ban("k", 0, 0.0)
        await within(b.flushed())
        await within(b.wait_generation("k", 2))
        assert b.generation("k") == 2
    assert sync_client(redis_db).get(f"{NS}:stats:bumps") == "2"


@deferred_f_from_coro_f
async def test_proxy_health_is_shared(redis_db: str) -> None:
    seen: list[tuple[Any, ...]] = []
    async with opened(redis_db) as a, opened(redis_db) as b:
        b.on_proxy_update = lambda *args: seen.append(args)
        a.proxy_changed("p1:3128", 3, 1234.5, True)
        await within(a.flushed())
        async with b._changed:
            await within(b._changed.wait_for(lambda: bool(seen)))
    assert seen == [("p1:3128", 3, 1234.5, True)]
    assert sync_client(redis_db).hget(f"{NS}:proxies", "p1:3128") == "[3, 1234.5, true]"


@deferred_f_from_coro_f
async def test_gave_up_records_and_heartbeat(redis_db: str) -> None:
    async with opened(redis_db, spider="demo") as a:
        a.record_give_up({"url": "http://x/", "reasons": ["status/403"]})
        await within(a.flushed())
        client = sync_client(redis_db)
        assert client.lrange(f"{NS}:gave_up", 0, -1) == [
            '{"url": "http://x/", "reasons": ["status/403"]}'
        ]
        crawlers = client.keys(f"{NS}:crawlers:*")
        assert len(crawlers) == 1 and crawlers[0].rsplit(":", 2)[1] == "demo"
        assert 0 < client.ttl(crawlers[0]) <= 30
    # A crawler that closes removes its heartbeat.
    assert client.keys(f"{NS}:crawlers:*") == []


@deferred_f_from_coro_f
async def test_unreachable_at_start_names_url_without_password(
    refused_port: Callable[[], int],
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{refused_port()}/0"
    store = RedisStore(url, NS)
    with pytest.raises(ConnectionError) as info:
        await store.open()
    assert "127.0.0.1" in str(info.value)
    assert_absent("hunter2", str(info.value))


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert redact_url("redis://pw@h:1/0") == "redis://***@h:1/0"


@deferred_f_from_coro_f
async def test_outage_keeps_changes_and_replays_them(tmp_path: Any) -> None:
    from .redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    try:
        async with opened(server.url, heartbeat_interval=60) as a:
            a.ban("before", 0, 0.0)
            await within(a.flushed())
            server.kill()
            for i in range(20):
                a.ban(f"during{i}", 0, 0.0)
            await within(a.wait_connected(False))
            # The local view goes on without Redis.
            assert a.generation("during0") == 1
            assert a.acquire("during0", 0.0) == (1, False)
            server.start()
            await within(a.flushed(), 15)
            assert a.lost_count == 1
        client = sync_client(server.url)
        # Redis came back empty (no persistence): what was burned before the
        # outage is written back, and what was banned during it replayed.
        for key in ["before"] + [f"during{i}" for i in range(20)]:
            assert client.get(f"{NS}:g:{key_digest(key)}") == "1", key
    finally:
        server.stop()


@deferred_f_from_coro_f
async def test_two_crawlers_of_one_spider_in_one_process_each_beat(
    redis_db: str,
) -> None:
    """Two crawlers of one spider in one process (a CrawlerProcess) wrote
    one heartbeat key: status saw one crawler, and none once the first
    closed while the second still ran."""
    import time

    from scrapy_sticky_proxy._status import collect_status
    from scrapy_sticky_proxy.routing.health import PoolPolicy

    def live() -> int:
        status = collect_status(sync_client(redis_db), NS, PoolPolicy(), time.time())
        return len(status["crawlers"])

    async with opened(redis_db, spider="s") as a:
        async with opened(redis_db, spider="s"):
            assert live() == 2
        assert live() == 1
        assert a.connected
    assert live() == 0
