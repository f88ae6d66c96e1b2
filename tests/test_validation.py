"""Untrusted values in real crawls: a per-request re-roll limit that is no
count (issue 10)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_all

from .conftest import crawl
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
