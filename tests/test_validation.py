"""Untrusted values in real crawls: a per-request re-roll limit that is no
count, and a give-up file that cannot take the record (issue 10)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_all

from .conftest import crawl
from .spiders import ItemsSpider
from .test_crawl import settings_for

# A hang fails the test instead of blocking it: the crawl is closed with
# another finish reason.
DEADLINE = {"CLOSESPIDER_TIMEOUT": 60}

BAD_LIMITS: list[Any] = [float("nan"), float("inf"), 10**30, "3", [1], True, -1]
# path -> meta value; the last three are valid or absent.
LIMITS: dict[str, Any] = {f"/item/{i}": v for i, v in enumerate(BAD_LIMITS)}
LIMITS.update({"/item/20": 0, "/item/21": 1, "/item/22": None})


class LimitsSpider(Spider):
    name = "limits"

    def __init__(self, base: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.base = base

    async def start(self) -> AsyncIterator[Any]:
        for path, limit in LIMITS.items():
            meta = {} if limit is None else {"sticky_proxy_max_rerolls": limit}
            yield Request(f"{self.base}{path}", meta=meta, callback=self.parse)

    def parse(self, response: Any) -> None:
        raise AssertionError("the site bans everything")


@deferred_f_from_coro_f
async def test_bad_per_request_limits_fall_back_to_the_setting(
    sandbox: Sandbox, tmp_path: Path, log_text: Any, caplog: Any
) -> None:
    sandbox.site.ban_rule = ban_all("403")
    gave_up = tmp_path / "gave_up.jsonl"
    result = await crawl(
        LimitsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_MAX_REROLLS=2,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
            **DEADLINE,
        ),
        base=sandbox.site_url,
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    # A bad value counts as the setting (2 re-rolls); valid ones still apply.
    attempts = Counter(hit.path for hit in sandbox.site.hits)
    expected = {path: 3 for path in LIMITS}
    expected.update({"/item/20": 1, "/item/21": 2})
    assert attempts == expected
    records = [json.loads(line) for line in gave_up.read_text().splitlines()]
    assert sorted(r["url"] for r in records) == sorted(
        sandbox.site_url + path for path in LIMITS
    )
    assert stats["sticky_proxy/gave_up"] == len(LIMITS)
    name = "sticky_proxy/invalid_meta/sticky_proxy_max_rerolls"
    assert stats[name] == len(BAD_LIMITS)
    assert "spider_exceptions" not in repr(stats)
    assert "Traceback" not in log_text()
    warnings = [r for r in caplog.records if "meta['sticky_proxy_max_r" in r.message]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


@pytest.mark.parametrize("backend", ["memory", "redis"])
@deferred_f_from_coro_f
async def test_give_ups_that_cannot_be_written_are_logged_and_counted(
    sandbox: Sandbox, backend: str, log_text: Any, request: Any
) -> None:
    """/dev/full opens for append at start and fails at each write."""
    sandbox.site.ban_rule = ban_all("403")
    extra: dict[str, Any] = {}
    if backend == "redis":
        url = request.getfixturevalue("redis_db")
        extra = {
            "STICKY_PROXY_BACKEND": "redis",
            "STICKY_PROXY_REDIS_URL": url,
            "STICKY_PROXY_NAMESPACE": "v",
        }
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_MAX_REROLLS=0,
            STICKY_PROXY_GAVE_UP_FILE="/dev/full",
            **extra,
            **DEADLINE,
        ),
        base=sandbox.site_url,
        n=5,
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert stats["sticky_proxy/gave_up"] == 5
    assert stats["sticky_proxy/gave_up_write_errors"] == 5
    assert "spider_exceptions" not in repr(stats)
    # Each record is in its ERROR line, so nothing is lost.
    errors = [line for line in log_text().splitlines() if "ERROR" in line]
    for i in range(5):
        url = f"{sandbox.site_url}/item/{i}"
        assert [line for line in errors if json.dumps(url) in line], url
    if backend == "redis":
        client = redis.Redis.from_url(extra["STICKY_PROXY_REDIS_URL"])
        shared = [json.loads(r) for r in client.lrange("v:gave_up", 0, -1)]
        client.close()
        # A set: RedisStore.close() can flush a batch the sender is already
        # sending, so a record may arrive twice (reported, not ours to fix).
        assert {r["url"] for r in shared} == {
            f"{sandbox.site_url}/item/{i}" for i in range(5)
        }


@pytest.mark.parametrize("key", ["caf\u00e9/\u4e2d", "lone-\ud800-surrogate"])
@deferred_f_from_coro_f
async def test_a_record_any_key_can_hold_is_written(tmp_path: Path, key: str) -> None:
    from scrapy_sticky_proxy.state.memory import MemoryStore

    path = tmp_path / "gave_up.jsonl"
    store = MemoryStore(gave_up_file=str(path))
    store.record_give_up({"url": "http://a.example/", "key": key})
    await store.close()
    assert store.gave_up_write_errors == 0
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [key]
