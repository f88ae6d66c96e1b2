"""Tolerance (issue 14.2) in real crawls through the sandbox: a rate-limiting
site, Scrapy's stack around the same-session retry, and a spider closing
while retries wait."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_all, rate_limit

from .conftest import crawl, records
from .spiders import IndexSpider, ItemsSpider
from .test_crawl import settings_for
from .test_gates import crawl_within

N = 6  # items, each with three follow-ups on the page's session


def statuses_by_exit(sandbox: Sandbox) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for hit in sandbox.site.hits:
        seen[hit.client_ip].append(hit.status)
    return seen


@deferred_f_from_coro_f
async def test_a_rate_limit_burns_fewer_sessions_with_a_tolerance_of_3(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    runs = {}
    for tolerance in (1, 3):
        sandbox.site.reset()
        sandbox.site.ban_rule = rate_limit()  # windows start afresh
        gave_up = tmp_path / f"tolerance-{tolerance}.jsonl"
        settings = settings_for(
            sandbox,
            STICKY_PROXY_BAN_TOLERANCE=tolerance,
            STICKY_PROXY_MAX_REROLLS=2,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        )
        result = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=N)
        exits = statuses_by_exit(sandbox)
        runs[tolerance] = (result, records(gave_up), exits)
        # Nothing lost: every page is an item (with its follow-ups) or a
        # record. And no exit was asked again before its Retry-After was
        # up (the rule answers 429 again then): one 429 per exit.
        pages = {i["item"] for i in result.items if i["part"] == "page"}
        recorded = {int(r["url"].rsplit("/", 1)[1]) for r in records(gave_up)}
        assert pages | recorded == set(range(N)) and not pages & recorded
        assert all(statuses.count(429) == 1 for statuses in exits.values()), exits

    once, thrice = runs[1], runs[3]
    # Tolerance 1 (the default, as before): every first request of an exit
    # burns it; each page burns 1 + 2 sessions and is given up.
    result, gave_up, exits = once
    assert result.items == []
    assert len(exits) == 3 * N and result.stats["sticky_proxy/rerolls"] == 2 * N
    assert [r["reasons"] for r in gave_up] == [["status/429"] * 3] * N
    assert "sticky_proxy/tolerated" not in result.stats
    # Tolerance 3: each page waits out its Retry-After on its session, then
    # it and its follow-ups are served there. No session burned.
    result, gave_up, exits = thrice
    assert len(result.items) == 4 * N and gave_up == []
    assert len(exits) == N
    assert all(statuses == [429] + [200] * 4 for statuses in exits.values())
    stats = result.stats
    assert stats["sticky_proxy/bans"] == stats["sticky_proxy/tolerated"] == N
    assert stats["sticky_proxy/retry_after_waits"] == N
    assert "sticky_proxy/rerolls" not in stats
    assert {i["generation"] for i in result.items if i["part"] == "page"} == {0}


@deferred_f_from_coro_f
async def test_a_tolerated_retry_inside_scrapys_stack(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Redirects (the site's first answer to /r/i is the 429), the HTTP
    cache, RetryMiddleware (429 is one of its codes), cookies, AutoThrottle
    and JOBDIR (the waiting copy goes through the disk queue) at once."""
    sandbox.site.ban_rule = rate_limit()
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        STICKY_PROXY_BAN_TOLERANCE=2,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
        RETRY_ENABLED=True,
        COOKIES_ENABLED=True,
        AUTOTHROTTLE_ENABLED=True,
        AUTOTHROTTLE_START_DELAY=0.1,
        AUTOTHROTTLE_MAX_DELAY=1.0,
        JOBDIR=str(tmp_path / "job"),
    )
    result = await crawl(
        IndexSpider, settings, base=sandbox.site_url, n=N, redirects=True
    )
    spider = result.crawler.spider
    assert isinstance(spider, IndexSpider)
    assert spider.answered == spider.requested and spider.failures == []
    assert len(result.items) == 4 * N and records(gave_up) == []
    exits = statuses_by_exit(sandbox)
    assert all(statuses.count(429) == 1 for statuses in exits.values()), exits
    stats = result.stats
    # The 429s were ours to retry, not RetryMiddleware's; none was cached.
    assert stats["sticky_proxy/tolerated"] == len(exits)
    assert "retry/count" not in stats
    assert stats.get("httpcache/store", 0) == len(spider.answered) + N
    assert "sticky_proxy/rerolls" not in stats


@deferred_f_from_coro_f
async def test_a_spider_closing_while_retries_wait_ends_at_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Every exit bans (403, no Retry-After): each page is tolerated once,
    # then its copy would wait the 600 s backoff.
    sandbox.site.ban_rule = ban_all("403")
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        STICKY_PROXY_BAN_TOLERANCE=3,
        STICKY_PROXY_TOLERANCE_BACKOFF=600,
        STICKY_PROXY_RETRY_AFTER_MAX=600,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        CLOSESPIDER_TIMEOUT=1,
    )
    result = await crawl_within(30, ItemsSpider, settings, base=sandbox.site_url, n=N)
    assert result.stats["finish_reason"] == "closespider_timeout"
    assert result.stats["sticky_proxy/tolerated"] == N
    # Each page was asked once; its waiting copy is recorded, not lost.
    assert len(sandbox.site.hits) == N
    got = records(gave_up)
    assert sorted(r["url"] for r in got) == sorted(
        f"{sandbox.site_url}/item/{i}" for i in range(N)
    )
    assert all(r["reasons"] == ["status/403", "spider_closing"] for r in got), got


@deferred_f_from_coro_f
async def test_retries_waiting_at_a_jobdir_pause_are_sent_by_the_resumed_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Paused (CLOSESPIDER_TIMEOUT) while tolerated retries wait: with JOBDIR
    they go back to the scheduler's queue, their deadline with them, and the
    resumed run sends them on the same sessions. Before, each was recorded
    as given up (spider_closing) and the resumed run, its URL already seen,
    never fetched it."""
    refused: set[str] = set()

    def rule(client_ip: str, path: str) -> str | None:
        if client_ip in refused:
            return None  # the session's retry is served
        refused.add(client_ip)  # each exit's first request: a ban verdict
        return "403"

    sandbox.site.ban_rule = rule
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        JOBDIR=str(tmp_path / "job"),
        STICKY_PROXY_BAN_TOLERANCE=3,
        STICKY_PROXY_TOLERANCE_BACKOFF=5,  # longer than the pause takes
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
    )
    n, base = 4, sandbox.site_url
    first = await crawl_within(
        30,
        ItemsSpider,
        {**settings, "CLOSESPIDER_TIMEOUT": 1},
        base=base,
        n=n,
        follow=False,
    )
    assert first.stats["finish_reason"] == "closespider_timeout"
    assert first.items == []
    assert first.stats["sticky_proxy/requeued"] == n
    second = await crawl_within(30, ItemsSpider, settings, base=base, n=n, follow=False)
    assert {i["item"] for i in second.items} == set(range(n))
    assert len(refused) == n  # the retries went out on the paused run's sessions
    assert not gave_up.exists() or records(gave_up) == []
