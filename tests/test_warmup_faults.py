"""Warm-ups against what a new user met (issue 15, after the review):
``ROBOTSTXT_OBEY`` (what ``scrapy startproject`` sets), a warm-up function
with a bug, and a downloader middleware before ours that holds a warm-up
past its deadline. Small crawls through the sandbox; each failed before
the fixes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from scrapy import Request
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_f_from_coro_f, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from scrapy_sticky_proxy.routing.warmup import WARMUP_ERROR
from scrapy_sticky_proxy.sandbox import Sandbox, warmup_required
from scrapy_sticky_proxy.sandbox.ban_rules import WARM_COOKIE, WARMUP_PATH

from .spiders import ItemsSpider
from .test_crawl import settings_for
from .test_gates import crawl_within


@deferred_f_from_coro_f
async def test_robots_txt_comes_through_a_warm_session_of_its_own(
    sandbox: Sandbox,
) -> None:
    # RobotsTxtMiddleware fetches robots.txt through the downloader before
    # the first page, and a warm-up request waits for it as any request
    # does. Before: robots.txt joined the site's session (KEY = "host") and
    # waited for its warm-up, which waited for robots.txt, until the
    # warm-up's deadline: "failed (timeout)", the spider closed.
    sandbox.site.ban_rule = warmup_required()  # robots.txt too
    n = 3
    settings = settings_for(
        sandbox,
        ROBOTSTXT_OBEY=True,
        STICKY_PROXY_KEY="host",
        STICKY_PROXY_WARMUP="tests.spiders.warm_up",
        STICKY_PROXY_WARMUP_TIMEOUT=3,
        STICKY_PROXY_WARMUP_MAX_FAILURES=1,
    )
    result = await crawl_within(30, ItemsSpider, settings, base=sandbox.site_url, n=n)
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert len(result.items) == 4 * n
    assert "sticky_proxy/bans" not in stats
    # robots.txt was read (the site's 404, not a ban page) through a session
    # of its own, warmed up first: two warm-ups, each from its exit.
    assert stats["robotstxt/response_status_count/404"] == 1
    hits = sandbox.site.hits
    robots = [h for h in hits if h.path == "/robots.txt"]
    assert len(robots) == 1
    warmed = Counter(h.client_ip for h in hits if h.path == WARMUP_PATH)
    assert len(warmed) == 2 and set(warmed.values()) == {1}
    pages = {h.client_ip for h in hits if h.path not in (WARMUP_PATH, "/robots.txt")}
    assert len(pages) == 1 and pages != {robots[0].client_ip}
    for hit in hits:
        first = next(h for h in hits if h.client_ip == hit.client_ip)
        assert first.path == WARMUP_PATH
        if hit.path != WARMUP_PATH:
            assert hit.headers.get("cookie") == f"{WARM_COOKIE}={hit.client_ip}"


def warm_up_wrong(request: Request, session: Any) -> Any:
    return "/warmup"  # a URL, not a Request


def warm_up_raises(request: Request, session: Any) -> Any:
    raise ValueError("no warm-up today")


@deferred_f_from_coro_f
async def test_a_broken_warmup_function_closes_the_spider_once_naming_it(
    sandbox: Sandbox, log_text: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: ten identical tracebacks, ten warm-ups counted as failed, then
    # a close pointing at STICKY_PROXY_WARMUP_CHECK and _MAX_FAILURES.
    for name, says in (("wrong", "returned '/warmup' (a str)"), ("raises", "raised")):
        settings = settings_for(
            sandbox, STICKY_PROXY_WARMUP=f"tests.test_warmup_faults.warm_up_{name}"
        )
        # The URL holds the password: crawl() checks that no log line does.
        base = f"{sandbox.site_url}/{sandbox.password}"
        caplog.clear()
        result = await crawl_within(30, ItemsSpider, settings, base=base, n=3)
        stats = result.stats
        assert stats["finish_reason"] == WARMUP_ERROR
        assert stats["sticky_proxy/warmup/errors"] >= 1
        # Not the session's fault: nothing failed, nothing burned or sent.
        for stat in ("failed", "sessions", "requests"):
            assert f"sticky_proxy/warmup/{stat}" not in stats
        assert "sticky_proxy/rerolls" not in stats
        assert sandbox.site.hits == []
        log = caplog.text
        closing = [line for line in log.splitlines() if "Closing the spider" in line]
        assert len(closing) == 1 and "STICKY_PROXY_WARMUP " in closing[0], closing
        assert says in closing[0] and "MAX_FAILURES" not in closing[0]
        assert log.count("Traceback") <= 1


HELD: list[Deferred[None]] = []


class HoldFirstWarmup:
    """Before our middleware: holds the first warm-up request until a second
    one comes (a middleware waiting for something that waits for the
    warm-up), then lets both go on."""

    async def process_request(self, request: Request) -> None:
        if not request.url.endswith(WARMUP_PATH):
            return
        if HELD:
            for held in HELD:
                if not held.called:
                    held.callback(None)
            return
        held: Deferred[None] = Deferred()
        HELD.append(held)
        # Bounded all the same: before the fix no second warm-up came.
        timer = call_later(10, lambda: held.called or held.callback(None))
        await maybe_deferred_to_future(held)
        timer.cancel()


@deferred_f_from_coro_f
async def test_a_warmup_held_before_our_middleware_is_unjudged_and_said(
    sandbox: Sandbox, log_text: Any
) -> None:
    # Before: its deadline passed, it "failed (timeout)" and counted towards
    # closing the spider, although it never went through the session (and
    # sticky_proxy/warmup/requests counted it as sent).
    HELD.clear()
    sandbox.site.ban_rule = warmup_required()
    settings = settings_for(
        sandbox,
        STICKY_PROXY_WARMUP="tests.spiders.warm_up",
        STICKY_PROXY_WARMUP_TIMEOUT=0.5,
        STICKY_PROXY_WARMUP_MAX_FAILURES=2,  # (unjudged ones are bounded too)
        DOWNLOADER_MIDDLEWARES={"tests.test_warmup_faults.HoldFirstWarmup": 1},
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=1, follow=False
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished" and len(result.items) == 1
    assert "sticky_proxy/warmup/failed" not in stats
    assert stats["sticky_proxy/warmup/sessions"] == 2
    assert stats["sticky_proxy/warmup/requests"] == 1  # the one that went
    assert stats["sticky_proxy/warmup/succeeded"] == 1
    warmed = [h.client_ip for h in sandbox.site.hits if h.path == WARMUP_PATH]
    assert len(warmed) == 1  # the held one, once let go, was dropped
    assert "never reached StickyProxyMiddleware" in log_text()
