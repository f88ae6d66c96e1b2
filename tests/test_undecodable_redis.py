"""Bytes that are not UTF-8, written by anyone to the namespace, are bad
values like any other: skipped and counted, never a failed reply that
stops the store, its listener, the status command or a crawl."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.state.redis_layout import key_digest

from .conftest import crawl
from .spiders import ItemsSpider
from .test_hostile_redis import run_requeue, run_status, skipped
from .test_redis_crawl import redis_settings
from .test_redis_store import NS, opened, within

if TYPE_CHECKING:
    from pathlib import Path

    from scrapy_sticky_proxy.sandbox import Sandbox

BAD = b"\xff\xfe"


def seed(url: str, ns: str) -> redis.Redis:
    """Non-UTF-8 bytes in a generation's value and name, a score's value,
    a give-up record and a crawler's heartbeat; one good generation."""
    client = redis.Redis.from_url(url)
    client.set(f"{ns}:g:{key_digest('bad')}".encode(), BAD)
    client.set(f"{ns}:g:".encode() + BAD, b"2")
    client.set(f"{ns}:e:{key_digest('bad')}".encode(), b"1 " + BAD)
    client.set(f"{ns}:g:{key_digest('good')}".encode(), b"2")
    client.rpush(f"{ns}:gave_up".encode(), b'{"url": "' + BAD + b'"}')
    client.set(f"{ns}:crawlers:x".encode(), BAD)
    return client


@deferred_f_from_coro_f
async def test_the_store_opens_and_keeps_listening(redis_db: str) -> None:
    client = seed(redis_db, NS)
    async with opened(redis_db) as store:
        assert store.generation("good") == 2
        assert store.generation("bad") == 0
        counts = skipped(store)
        assert counts["redis/skipped/generation"] == 2
        assert counts["redis/skipped/score"] == 1
        for message in (b"g " + BAD + b" 1", f"g {key_digest('k')} ".encode() + BAD):
            client.publish(f"{NS}:events", message)
        client.publish(f"{NS}:events", f"g {key_digest('after')} 1")
        await within(store.wait_generation("after", 1))
        assert skipped(store)["redis/skipped/event"] == 2
        assert store.generation("k") == 0


def test_status_and_requeue_read_past_it(redis_db: str, tmp_path: Path) -> None:
    client = seed(redis_db, "sticky_proxy")
    good = b'{"url": "http://127.0.0.1:1/item/1", "method": "GET"}'
    client.rpush(b"sticky_proxy:gave_up", good)
    status = run_status(tmp_path, redis_db)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "Burned keys: 1" in status.stdout
    requeue = run_requeue(tmp_path, redis_db)
    assert requeue.returncode == 0, requeue.stderr[-2000:]
    assert "Traceback" not in requeue.stderr
    # The good record is replayed; the one no request can carry stays.
    assert client.lrange(b"s:k", 0, -1) == [
        b'{"url": "http://127.0.0.1:1/item/1", "method": "GET"}'
    ]
    assert client.lrange(b"sticky_proxy:gave_up", 0, -1) == [b'{"url": "' + BAD + b'"}']


@deferred_f_from_coro_f
async def test_a_crawl_on_the_namespace_runs(sandbox: Sandbox, redis_db: str) -> None:
    seed(redis_db, "t")
    result = await crawl(
        ItemsSpider,
        redis_settings(sandbox, redis_db),
        base=sandbox.site_url,
        n=5,
        follow=False,
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert len(result.items) == 5
    assert stats["sticky_proxy/redis/skipped/generation"] == 2
