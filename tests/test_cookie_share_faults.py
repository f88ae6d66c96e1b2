"""Shared cookies (``STICKY_PROXY_SHARE_COOKIES``) when Redis stops
answering, and when a session is burned: a real redis-server, paused with
``CLIENT PAUSE``, and real crawls through the sandbox."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.providers import get_preset
from scrapy_sticky_proxy.sandbox import Sandbox
from scrapy_sticky_proxy.state.backoff import Outage
from scrapy_sticky_proxy.state.redis_cookies import redis_key

from .conftest import crawl
from .test_cookies import PartsSpider, first_page_request_banned, foreign
from .test_redis_crawl import redis_settings

PAUSE_MS = 7000  # long enough for waits after the first ones to time out
BATCH = 8  # requests sent at once while Redis is paused
CHAIN_CAP = 2000  # bounds the wait for sharing to resume


class PausedRedisSpider(Spider):
    """A page with key ``a`` (its cookie shared); then Redis is paused, one
    request goes out and, once it is back, BATCH at once; then one request
    after another with key ``a`` until its cookie is read from Redis again
    (sharing resumed), at most CHAIN_CAP."""

    name = "paused_redis"

    def __init__(self, base: str, redis_url: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.base = base
        self.client = redis.Redis.from_url(redis_url)
        self.requested = 0
        self.chain = 0

    def get(self, path: str, key: str, callback: Any) -> Request:
        self.requested += 1
        meta = {"sticky_proxy_key": key}
        return Request(
            f"{self.base}{path}", meta=meta, callback=callback, dont_filter=True
        )

    async def start(self) -> AsyncIterator[Any]:
        yield self.get("/item/0", "a", self.paused)

    def paused(self, response: Response) -> Any:
        yield {"url": response.url}
        self.client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        yield self.get("/item/1", "b", self.batch)

    def batch(self, response: Response) -> Any:
        yield {"url": response.url}
        for i in range(BATCH):
            yield self.get(f"/item/{i + 2}", f"c{i}", self.item)
        yield self.get("/item/0/detail", "a", self.until_shared)

    def item(self, response: Response) -> Any:
        yield {"url": response.url}

    def until_shared(self, response: Response) -> Any:
        yield {"url": response.url}
        self.chain += 1
        stats = self.crawler.stats
        assert stats is not None
        shared = stats.get_value("sticky_proxy/cookie_jars/shared/loaded")
        if not shared and self.chain < CHAIN_CAP:
            yield self.get("/item/0/detail", "a", self.until_shared)


@deferred_f_from_coro_f
async def test_a_paused_redis_costs_a_bounded_number_of_waits(
    sandbox: Sandbox, redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.site.ip_cookies = True
    settings = redis_settings(
        sandbox,
        redis_db,
        STICKY_PROXY_SHARE_COOKIES=True,
        # Paces the requests that wait for sharing to resume (one slot: the
        # site's), so that they number hundreds, not thousands.
        DOWNLOAD_DELAY=0.02,
    )
    with caplog.at_level(logging.INFO, logger="scrapy_sticky_proxy.cookies"):
        result = await crawl(
            PausedRedisSpider, settings, base=sandbox.site_url, redis_url=redis_db
        )
    stats = result.stats
    spider = result.crawler.spider
    assert isinstance(spider, PausedRedisSpider)
    # Every request became an item, Redis or not.
    assert len(result.items) == spider.requested == 2 + BATCH + spider.chain
    # The request sent first after the pause waited SHARE_TIMEOUT; then at
    # most one probe per backoff period did while Redis stayed paused (the
    # first one 1 s later, the next 2 s after that, when it answers again).
    # Before: each of the BATCH reads and each of their writes waited too.
    errors = stats["sticky_proxy/cookie_jars/shared/errors"]
    assert 1 <= errors <= 3, errors
    assert stats["sticky_proxy/cookie_jars/shared/bypassed"] >= BATCH
    # Sharing resumed: key a's cookie, written before the pause, was read.
    assert stats["sticky_proxy/cookie_jars/shared/loaded"] >= 1
    assert spider.chain < CHAIN_CAP
    assert foreign(sandbox) == []
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Could not share" in m for m in messages) == 1, messages
    assert sum("Redis answers again" in m for m in messages) == 1, messages


def test_the_backoff_grows_and_resets() -> None:
    now = [0.0]
    outage = Outage(clock=lambda: now[0])
    assert outage.admit() == "call"
    # Calls in flight when Redis stops: the first starts the outage (logged
    # once), the others change nothing.
    assert outage.failed("call") is True
    assert outage.failed("call") is False
    periods = []
    for _ in range(8):
        assert outage.admit() == "skip"
        now[0] = outage.until
        assert outage.admit() == "probe"
        assert outage.admit() == "skip"  # one probe at a time
        periods.append(outage.delay)
        assert outage.failed("probe") is False
    assert periods == [1, 2, 4, 8, 16, 30, 30, 30]
    now[0] = outage.until
    assert outage.admit() == "probe"
    assert outage.succeeded() is True
    assert outage.admit() == "call"
    assert outage.succeeded() is False
    # The next outage starts again at 1 s.
    assert outage.failed("call") is True
    assert outage.delay == 1
    # A probe whose request was cancelled frees the way for another.
    now[0] = outage.until
    assert outage.admit() == "probe"
    outage.abandoned("probe")
    assert outage.admit() == "probe"


@deferred_f_from_coro_f
async def test_a_burned_session_s_shared_cookies_are_deleted(
    sandbox: Sandbox, redis_db: str
) -> None:
    # Each item page's first request is banned (and its 403 sets a cookie,
    # written to Redis); the re-roll's session keeps its own.
    sandbox.site.ip_cookies = True
    sandbox.site.ban_rule = first_page_request_banned()
    base, route = sandbox.site_url, sandbox.gateway_hostport
    keys = [f"k{i}" for i in range(3)]
    settings = redis_settings(
        sandbox, redis_db, STICKY_PROXY_SHARE_COOKIES=True, STICKY_PROXY_MAX_REROLLS=3
    )
    result = await crawl(
        PartsSpider,
        settings,
        requests=[(f"{base}/item/{i}", k) for i, k in enumerate(keys)],
    )
    assert len(result.items) == 3
    stats = result.stats
    assert stats["sticky_proxy/rerolls"] == 3
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    rules = get_preset("sandbox").id_rules

    def stored(generation: int) -> list[bool]:
        return [
            bool(
                client.exists(
                    redis_key(
                        "t", f"sticky_proxy/{route}/{session_id(k, generation, rules)}"
                    )
                )
            )
            for k in keys
        ]

    assert stored(0) == [False] * 3  # before: [True] * 3, until the TTL
    assert stored(1) == [True] * 3
    assert stats["sticky_proxy/cookie_jars/shared/deleted"] == 3
