"""Warm-up where it meets the rest (review of issue 15): proxy tiers, proactive
rotation, ban tolerance and RetryMiddleware, and warm-ups that end
unjudged. Small crawls through the sandbox; each failed before the fixes."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from scrapy import Request, Spider
from scrapy.http import HtmlResponse
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.routing.warmup import UNJUDGED_GAVE_UP
from scrapy_sticky_proxy.sandbox import Sandbox, warmup_required
from scrapy_sticky_proxy.sandbox.ban_rules import WARMUP_PATH, rate_limit

from .conftest import records
from .spiders import ItemsSpider
from .test_crawl import settings_for
from .test_gates import crawl_within
from .test_tiers import second_gateway  # noqa: F401 (a fixture)


def warm_up_elsewhere(request: Request, session: Any) -> Request:
    """The landing page is on another host name of the site (a site's www.)."""
    return Request(urljoin(request.url.replace("127.0.0.1", "localhost"), WARMUP_PATH))


class ThreePages(Spider):
    name = "three_pages"

    def __init__(self, port: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.port = port

    async def start(self) -> AsyncIterator[Any]:
        for i in range(3):
            yield Request(f"http://127.0.0.1:{self.port}/item/{i}")

    def parse(self, response: Any) -> Iterator[dict[str, Any]]:
        yield {
            "exit": response.css("#client::text").get(),
            "tier": response.meta["sticky_proxy_tier"],
        }


@deferred_f_from_coro_f
async def test_banned_warmups_move_the_site_up_and_warm_up_through_its_tier(
    sandbox: Sandbox,
    second_gateway: Sandbox,  # noqa: F811
) -> None:
    # Every exit of tier 1 is banned, warm-ups included; the warm-up page is
    # on another host (localhost) than the pages (127.0.0.1, one session).
    tier_one = sandbox.gateway
    sandbox.site.ban_rule = lambda ip, path: (
        "403" if ip in tier_one.sessions().values() else None
    )
    settings = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_TIERS": [
            {"url": sandbox.gateway_url},
            {"url": second_gateway.gateway_url},
        ],
        "STICKY_PROXY_TIER_WINDOW": 2,
        "STICKY_PROXY_TIER_BAN_RATE": 1.0,  # 2 bans in a row move a site
        "STICKY_PROXY_KEY": "host",
        "STICKY_PROXY_WARMUP": "tests.test_warmup_paths.warm_up_elsewhere",
        # The failure that moves the site must not close the spider: the new
        # tier is a new chance.
        "STICKY_PROXY_WARMUP_MAX_FAILURES": 2,
        "CONCURRENT_REQUESTS": 1,
    }
    result = await crawl_within(30, ThreePages, settings, port=sandbox.site_port)
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert len(result.items) == 3 and {i["tier"] for i in result.items} == {2}
    # The two warm-up bans counted in the site's tier-1 window, and moved it.
    assert stats["sticky_proxy/warmup/failed"] == 2
    assert stats["sticky_proxy/tier/1/bans"] == stats["sticky_proxy/bans"] == 2
    assert stats["sticky_proxy/tier/escalations"] == 1
    assert stats["sticky_proxy/warmup/succeeded"] == 1
    # The tier-2 session was warmed up through its own exit, on tier 2,
    # although the warm-up page's host was never moved.
    tier_two = set(second_gateway.gateway.sessions().values())
    warmed = [h.client_ip for h in sandbox.site.hits if h.path == WARMUP_PATH]
    assert len(warmed) == 3 and set(warmed[2:]) <= tier_two
    assert {i["exit"] for i in result.items} == {warmed[2]}


@deferred_f_from_coro_f
async def test_rotation_warms_each_generation_up_once(sandbox: Sandbox) -> None:
    # The README's recipe: one session for the site, rotated every 5 uses.
    sandbox.site.ban_rule = warmup_required()
    n, uses = 40, 5
    settings = settings_for(
        sandbox,
        STICKY_PROXY_WARMUP="tests.spiders.warm_up",
        STICKY_PROXY_KEY="host",
        STICKY_PROXY_SESSION_MAX_USES=uses,
        CONCURRENT_REQUESTS=8,
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=n, follow=False
    )
    stats = result.stats
    assert len(result.items) == n
    # Waiting for a warm-up is no use of the session: each generation warms
    # up once and serves exactly its uses.
    assert stats["sticky_proxy/warmup/sessions"] == n // uses
    assert stats["sticky_proxy/rotations"] == n // uses - 1
    warmups = Counter(h.client_ip for h in sandbox.site.hits if h.path == WARMUP_PATH)
    pages = Counter(h.client_ip for h in sandbox.site.hits if h.path != WARMUP_PATH)
    assert set(warmups.values()) == {1} and set(pages.values()) == {uses}
    assert pages.keys() == warmups.keys()
    assert "sticky_proxy/bans" not in stats and "sticky_proxy/gave_up" not in stats


@deferred_f_from_coro_f
async def test_a_rate_limited_warmup_is_tolerated_not_retried_at_once(
    sandbox: Sandbox,
) -> None:
    # Each exit's first request in a minute gets 429 with Retry-After: 1.
    sandbox.site.ban_rule = rate_limit()
    n = 4
    settings = settings_for(
        sandbox,
        STICKY_PROXY_WARMUP="tests.spiders.warm_up",
        STICKY_PROXY_KEY="host",
        STICKY_PROXY_BAN_TOLERANCE=3,
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=n, follow=False
    )
    stats = result.stats
    assert len(result.items) == n
    # One 429 (not retried by RetryMiddleware), then the same exit after
    # the wait it asked for: no session burned.
    hits = [(h.path, h.status, h.client_ip) for h in sandbox.site.hits]
    first = hits[0][2]
    assert hits[:2] == [(WARMUP_PATH, 429, first), (WARMUP_PATH, 200, first)]
    assert {h[2] for h in hits} == {first}
    assert "retry/count" not in stats
    assert stats["sticky_proxy/bans/status/429"] == stats["sticky_proxy/tolerated"] == 1
    # Counted as the middleware's own tolerated retries are (they were not).
    assert stats["sticky_proxy/tolerated/count"] == 1
    assert stats["sticky_proxy/tolerated/reason_count/status/429"] == 1
    assert stats["sticky_proxy/warmup/succeeded"] == 1
    assert "sticky_proxy/warmup/failed" not in stats


class CachedWarmups:
    """A cache that answers warm-ups although they ask it not to."""

    def process_request(self, request: Request) -> Any:
        if request.url.endswith(WARMUP_PATH):
            return HtmlResponse(request.url, body=b"<p>old</p>", flags=["cached"])
        return None


@deferred_f_from_coro_f
async def test_warmups_that_prove_nothing_burn_nothing_and_are_bounded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.site.ban_rule = warmup_required()
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        STICKY_PROXY_WARMUP="tests.spiders.warm_up",
        STICKY_PROXY_WARMUP_MAX_FAILURES=2,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        DOWNLOADER_MIDDLEWARES={"tests.test_warmup_paths.CachedWarmups": 1},
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=2, follow=False
    )
    stats = result.stats
    # A cached answer is no failure: nothing burned, the spider not closed;
    # each request gives up after two such warm-ups, for that reason.
    assert stats["finish_reason"] == "finished"
    assert "sticky_proxy/warmup/failed" not in stats
    assert sandbox.site.hits == []
    # None went through a session: none counted as sent (before: 4).
    assert "sticky_proxy/warmup/requests" not in stats
    assert [r["reasons"] for r in records(gave_up)] == [[UNJUDGED_GAVE_UP]] * 2
