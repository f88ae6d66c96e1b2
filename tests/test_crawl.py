"""Real crawls through the sandbox gateway (issue 2's acceptance tests)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_all, ban_fraction

from .conftest import assert_no_leak, crawl
from .spiders import ItemsSpider, item_of


def exits_by_item(sandbox: Sandbox, rule: Any = None) -> dict[int, set[str]]:
    """Client addresses the site saw per item, for requests it served."""
    seen: dict[int, set[str]] = defaultdict(set)
    for hit in sandbox.site.hits:
        item = item_of(hit.path)
        if item is None or (rule and rule(hit.client_ip, hit.path)):
            continue
        seen[item].add(hit.client_ip)
    return seen


def settings_for(sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    return {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_URL": sandbox.gateway_url,
        "STICKY_PROXY_BAN_PATTERNS": [r"g-recaptcha"],
        **extra,
    }


async def check_items_and_bans(sandbox: Sandbox, base: str, log_text: Any) -> None:
    rule = ban_fraction(0.2)
    sandbox.site.ban_rule = rule
    result = await crawl(ItemsSpider, settings_for(sandbox), base=base, n=200)

    pages = {i["item"] for i in result.items if i["part"] == "page"}
    parts = [i for i in result.items if i["part"] != "page"]
    assert pages == set(range(200))
    assert len(parts) == 600

    seen = exits_by_item(sandbox, rule)
    assert all(len(exits) == 1 for exits in seen.values()), {
        item: exits for item, exits in seen.items() if len(exits) > 1
    }
    assert len({next(iter(exits)) for exits in seen.values()}) >= 195

    banned_hits = [h for h in sandbox.site.hits if rule(h.client_ip, h.path)]
    kinds = {rule(h.client_ip, h.path) for h in banned_hits}
    assert kinds == {"403", "429", "captcha"}
    stats = result.stats
    # Every ban the site served was seen as one, and re-rolled exactly once.
    assert stats["sticky_proxy/bans"] == len(banned_hits)
    assert stats["sticky_proxy/rerolls"] == len(banned_hits)
    assert stats.get("sticky_proxy/gave_up", 0) == 0
    # About a fifth of the first exits are banned.
    assert 25 <= len(banned_hits) <= 80
    assert_no_leak(sandbox.password, result, log_text(), sandbox)


@deferred_f_from_coro_f
async def test_items_follow_ups_and_bans_http(sandbox: Sandbox, log_text: Any) -> None:
    await check_items_and_bans(sandbox, sandbox.site_url, log_text)


@deferred_f_from_coro_f
async def test_items_follow_ups_and_bans_https(sandbox: Sandbox, log_text: Any) -> None:
    await check_items_and_bans(sandbox, sandbox.site_https_url, log_text)


@deferred_f_from_coro_f
async def test_pinning_gateway_http(pinning_sandbox: Sandbox, log_text: Any) -> None:
    await check_items_and_bans(pinning_sandbox, pinning_sandbox.site_url, log_text)


@deferred_f_from_coro_f
async def test_pinning_gateway_https(pinning_sandbox: Sandbox, log_text: Any) -> None:
    await check_items_and_bans(
        pinning_sandbox, pinning_sandbox.site_https_url, log_text
    )


@deferred_f_from_coro_f
async def test_stock_handler_mixes_sessions_on_a_pinning_gateway(
    pinning_sandbox: Sandbox,
) -> None:
    """The bug the download handler fixes, reproduced: with Scrapy's own
    handler, plain-http requests of one session reuse connections opened by
    another, and a pinning gateway sends them out through the wrong exit."""
    stock = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
    result = await crawl(
        ItemsSpider,
        settings_for(
            pinning_sandbox, DOWNLOAD_HANDLERS={"http": stock, "https": stock}
        ),
        base=pinning_sandbox.site_url,
        n=100,
    )
    assert len(result.items) == 400
    seen = exits_by_item(pinning_sandbox)
    split = [item for item, exits in seen.items() if len(exits) > 1]
    assert len(split) > 10
    assert len({e for exits in seen.values() for e in exits}) < 90


@deferred_f_from_coro_f
async def test_ban_storm_gives_up_after_max_rerolls(
    sandbox: Sandbox, tmp_path: Any, log_text: Any
) -> None:
    sandbox.site.ban_rule = ban_all("403")
    gave_up = tmp_path / "gave_up.jsonl"
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_MAX_REROLLS=3,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        ),
        base=sandbox.site_url,
        n=10,
    )
    assert result.items == []
    attempts = defaultdict(int)
    for hit in sandbox.site.hits:
        attempts[hit.path] += 1
    assert attempts == {f"/item/{i}": 4 for i in range(10)}
    stats = result.stats
    assert stats["sticky_proxy/gave_up"] == 10
    assert stats["sticky_proxy/rerolls"] == 30
    assert stats["sticky_proxy/bans/status/403"] == 40
    assert stats["finish_reason"] == "finished"
    records = [json.loads(line) for line in gave_up.read_text().splitlines()]
    assert sorted(r["url"] for r in records) == sorted(
        f"{sandbox.site_url}/item/{i}" for i in range(10)
    )
    assert all(r["reasons"] == ["status/403"] * 4 for r in records)
    assert all(r["method"] == "GET" and r["key"] for r in records)
    assert_no_leak(sandbox.password, result, log_text(), sandbox)


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_bad_credentials_stop_the_crawl(
    sandbox: Sandbox, scheme: str, log_text: Any
) -> None:
    wrong = "wrong-" + sandbox.password
    url = sandbox.gateway_url.replace(sandbox.password, wrong)
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, STICKY_PROXY_URL=url),
        base=base,
        n=100,
    )
    assert result.stats["finish_reason"] == "sticky_proxy_auth_failed"
    assert len(sandbox.gateway.log) <= 5
    assert sandbox.gateway.auth_failures >= 1
    assert result.items == []
    text = log_text()
    assert "407" in text and sandbox.gateway_hostport in text
    assert wrong not in text
    assert_no_leak(wrong, result, text, sandbox)
