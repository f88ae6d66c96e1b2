"""STICKY_PROXY_LIST: keys stick to proxies, bans and dead proxies move them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy import StickyProxyMiddleware
from scrapy_sticky_proxy.routing.health import ProxyState
from scrapy_sticky_proxy.sandbox import Sandbox, ban_all

from .conftest import assert_no_leak, crawl
from .spiders import ItemsSpider, item_of


@pytest.fixture
def gateways() -> Iterator[list[Sandbox]]:
    boxes = [Sandbox(password=f"static-pw-{i}").start() for i in range(3)]
    yield boxes
    for box in boxes:
        box.stop()


def exits_of(site: Any) -> dict[int, set[str]]:
    seen: dict[int, set[str]] = {}
    for hit in site.hits:
        item = item_of(hit.path)
        if item is not None and hit.status == 200:
            seen.setdefault(item, set()).add(hit.client_ip)
    return seen


@deferred_f_from_coro_f
async def test_keys_stick_to_proxies_and_leave_a_banned_one(
    gateways: list[Sandbox], log_text: Any
) -> None:
    site = gateways[0].site
    # Without a {session} placeholder a static proxy has one exit.
    exits = [box.gateway.exit_for("") for box in gateways]
    site.ban_rule = lambda ip, path: "403" if ip == exits[1] else None
    result = await crawl(
        ItemsSpider,
        {"STICKY_PROXY_LIST": [box.gateway_url for box in gateways]},
        base=gateways[0].site_url,
        n=60,
    )
    assert len(result.items) == 240
    seen = exits_of(site)
    assert set(seen) == set(range(60))
    assert all(len(ips) == 1 for ips in seen.values())
    used = {ip for ips in seen.values() for ip in ips}
    assert used == {exits[0], exits[2]}

    banned = [hit for hit in site.hits if hit.client_ip == exits[1]]
    stats = result.stats
    assert 1 <= len(banned) == stats["sticky_proxy/bans/status/403"]
    assert stats["sticky_proxy/rerolls"] == len(banned)
    mw = result.crawler.get_downloader_middleware(StickyProxyMiddleware)
    assert mw is not None and mw.pool is not None
    states = mw.pool.snapshot(0)
    assert states[f"127.0.0.1:{gateways[1].gateway_port}"] in (
        ProxyState.DEGRADED,
        ProxyState.UNHEALTHY,
    )
    # One download slot per proxy, named by host:port only.
    assert {f"127.0.0.1:{box.gateway_port}" for box in gateways}.issuperset(
        result.crawler.engine.downloader.slots  # type: ignore[union-attr]
    )
    for box in gateways:
        assert_no_leak(box.password, result, log_text(), gateways[0])


@deferred_f_from_coro_f
async def test_follow_ups_of_a_rerolled_key_never_go_back_to_the_banning_proxy(
    gateways: list[Sandbox],
) -> None:
    # The banning proxy is never benched, so only the pick rule keeps a
    # re-rolled key's follow-ups (generation 1, picked without knowing where
    # generation 0 was banned) away from it. Before the fix about a third of
    # them went back, were banned again, and landed on yet another proxy.
    site = gateways[0].site
    exits = [box.gateway.exit_for("") for box in gateways]
    site.ban_rule = lambda ip, path: "403" if ip == exits[1] else None
    result = await crawl(
        ItemsSpider,
        {
            "STICKY_PROXY_LIST": [box.gateway_url for box in gateways],
            "STICKY_PROXY_LIST_UNHEALTHY_AFTER": 999,
            "STICKY_PROXY_LIST_DEAD_AFTER": 1000,
        },
        base=gateways[0].site_url,
        n=60,
    )
    assert len(result.items) == 240
    seen = exits_of(site)
    split = [item for item, ips in seen.items() if len(ips) != 1]
    assert not split, f"items fetched from several exits: {split}"
    # Each key is banned once, by its first request there; every other
    # request of a banned key already knows its new generation or shares
    # that one ban.
    banned_items = {item_of(h.path) for h in site.hits if h.client_ip == exits[1]}
    assert 5 <= len(banned_items) <= result.stats["sticky_proxy/bans"]
    assert result.stats.get("sticky_proxy/gave_up", 0) == 0


@deferred_f_from_coro_f
async def test_unreachable_proxy_fails_over(
    gateways: list[Sandbox], log_text: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    result = await crawl(
        ItemsSpider,
        {
            "STICKY_PROXY_LIST": [
                f"http://127.0.0.1:{closed_port}",
                gateways[0].gateway_url,
            ],
            "RETRY_ENABLED": False,
        },
        base=gateways[0].site_url,
        n=40,
    )
    assert len(result.items) == 160
    stats = result.stats
    assert stats["sticky_proxy/failovers"] >= 1
    assert stats.get("sticky_proxy/bans", 0) == 0
    # The warning does not say requests are held back while they fail over.
    assert "refuses connections: requests with no other proxy wait" in log_text()
    assert "holding requests back" not in log_text()


@deferred_f_from_coro_f
async def test_spider_closes_when_every_proxy_is_dead(
    gateways: list[Sandbox],
) -> None:
    gateways[0].site.ban_rule = ban_all("403")
    result = await crawl(
        ItemsSpider,
        {
            "STICKY_PROXY_LIST": [box.gateway_url for box in gateways[:2]],
            "STICKY_PROXY_MAX_REROLLS": 1000,
            "STICKY_PROXY_LIST_UNHEALTHY_AFTER": 1,
            "STICKY_PROXY_LIST_DEAD_AFTER": 3,
            "STICKY_PROXY_LIST_BACKOFF": 0.001,
            "STICKY_PROXY_LIST_BACKOFF_MAX": 0.002,
        },
        base=gateways[0].site_url,
        n=5,
    )
    assert result.stats["finish_reason"] == "sticky_proxy_no_proxies_left"
    assert result.items == []
