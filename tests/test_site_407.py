"""A 407 the target site answers is not the gateway refusing the
credentials: it closes no crawl. Through an https tunnel it cannot be the
gateway's; over plain http it is taken for the gateway's while the gateway
has answered nothing else yet (the credential probe), and after that only
as the third 407 in a row (credentials revoked mid-crawl). Real crawls
through the sandbox, whose demo site answers 407 where the rule says so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from .conftest import crawl
from .spiders import ItemsSpider
from .test_crawl import settings_for

if TYPE_CHECKING:
    from pathlib import Path

    from scrapy_sticky_proxy.sandbox import Sandbox


def site_407(*items: int, since: int | None = None) -> Any:
    """The demo site answers 407 for these item pages (and their
    follow-ups), or for every item from *since* on."""

    def rule(ip: str, path: str) -> str | None:
        parts = path.split("/")
        if len(parts) > 2 and parts[1] == "item" and parts[2].isdigit():
            item = int(parts[2])
            if item in items or (since is not None and item >= since):
                return "407"
        return None

    return rule


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_page_the_site_answers_407_closes_nothing(
    sandbox: Sandbox, scheme: str
) -> None:
    sandbox.site.ban_rule = site_407(3, 7)
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    # One request at a time: the gateway has answered before item 3 asks.
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, CONCURRENT_REQUESTS=1),
        base=base,
        n=12,
        follow=False,
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert sorted(i["item"] for i in result.items) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    # The 407 pages reached the spider's stack as responses (filtered there).
    assert stats["httperror/response_ignored_status_count/407"] == 2
    assert "sticky_proxy/auth_failed" not in stats


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_at_once_at_the_start(sandbox: Sandbox, scheme: str) -> None:
    """The first answer is a 407: over http it is taken for the gateway's
    (the credential probe cannot tell), over https it cannot be."""
    sandbox.site.ban_rule = site_407(0)
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, CONCURRENT_REQUESTS=1),
        base=base,
        n=4,
        follow=False,
    )
    closed = result.stats["finish_reason"] == "sticky_proxy_auth_failed"
    assert closed == (scheme == "http")
    assert len(result.items) == (0 if scheme == "http" else 3)


@deferred_f_from_coro_f
async def test_three_407s_in_a_row_over_http_close_the_crawl(
    sandbox: Sandbox,
) -> None:
    """What a gateway does when the account is cut off mid-crawl."""
    sandbox.site.ban_rule = site_407(since=5)
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, CONCURRENT_REQUESTS=1),
        base=sandbox.site_url,
        n=40,
        follow=False,
    )
    stats = result.stats
    assert stats["finish_reason"] == "sticky_proxy_auth_failed"
    assert sorted(i["item"] for i in result.items) == [0, 1, 2, 3, 4]
    assert len([h for h in sandbox.site.hits if h.status == 407]) == 3


@deferred_f_from_coro_f
async def test_the_gateway_s_407_is_not_cached(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A run with a wrong password, then one with the right one, over the
    same HTTP cache: the second fetches every page (before: the cached 407
    was the site's answer to it, and the page was lost)."""
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    wrong = sandbox.gateway_url.replace(sandbox.password, "wrong-" + sandbox.password)
    first = await crawl(
        ItemsSpider,
        settings_for(sandbox, STICKY_PROXY_URL=wrong, **cache),
        base=sandbox.site_url,
        n=4,
        follow=False,
    )
    assert first.stats["finish_reason"] == "sticky_proxy_auth_failed"
    second = await crawl(
        ItemsSpider,
        settings_for(sandbox, **cache),
        base=sandbox.site_url,
        n=4,
        follow=False,
    )
    assert second.stats["finish_reason"] == "finished"
    assert sorted(i["item"] for i in second.items) == [0, 1, 2, 3]
    assert "httpcache/hit" not in second.stats
