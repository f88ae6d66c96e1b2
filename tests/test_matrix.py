"""The interaction matrix of issue 10: the example-style crawl inside
Scrapy's whole stack, under partial failures.

Each case runs the example project's crawl (the index page, 40 items, three
follow-ups each sent with the item's session key) with 20 % of the exits
banning and the gateway refusing connections for a few seconds mid-crawl,
with one Scrapy feature on. Each crawl must end by itself within DEADLINE,
and every URL the spider requested that the middleware routed must end as a
response to the spider or as a record in STICKY_PROXY_GAVE_UP_FILE (outcome
"gave_up" or "failed"). Which URLs count:

* most cases: every URL the spider requested (all of them are scheduled);
* ``depth_limit``: the URLs Scrapy scheduled, i.e. those DepthMiddleware let
  through (the index and the item pages; the follow-ups are at depth 2);
* ``closespider_itemcount``: the URLs with a request that reached the
  downloader (``request_reached_downloader``, sent after the downloader
  middlewares, ours included, let it through); requests still in the
  scheduler when the spider closed were never routed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scrapy import signals
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_all, ban_fraction
from scrapy_sticky_proxy.sandbox.ban_rules import foreign_ip_cookie

from .conftest import CrawlResult, assert_absent, records
from .spiders import IndexSpider, at_counts
from .test_ban_paths import cached_responses
from .test_crawl import exits_by_item, settings_for
from .test_gates import crawl_within

N = 40  # items, each with three follow-ups
OUTAGE_AT = 30  # items scraped when the gateway goes away
# Seconds the gateway refuses connections: the crawl holds its requests,
# sends a probe 0.5 s after the first refusal (refused) and one more a
# second later, which finds it back. (2.5 s cost another probe, 2 s more.)
OUTAGE = 1.2
STATIC_OUTAGE = 1.5  # seconds all three static proxies refuse
DEADLINE = 60  # seconds any one crawl may take before the test fails
RECORD_OUTCOMES = {"gave_up", "failed"}


@dataclass(frozen=True)
class Case:
    settings: dict[str, Any] = field(default_factory=dict)
    redirects: bool = False  # the spider asks for /r/{i}, which redirects
    static: bool = False  # three static proxies instead of one gateway
    # Items scraped when the gateway goes away; 0: when the index page is
    # answered (its 40 item pages not sent yet).
    outage_at: int = OUTAGE_AT
    # Items scraped when the gateway drops every connection, back at once.
    cut_at: int | None = None
    # Which of the spider's URLs must end as an item or a record.
    counted: str = "scheduled"  # or "reached" (the downloader)
    # Each item's page and follow-ups leave through one exit.
    sticky: bool = True
    finish_reason: str = "finished"


CASES = {
    "redirects": Case(redirects=True),
    "retry_times_3": Case({"RETRY_ENABLED": True, "RETRY_TIMES": 3}),
    "httpcache": Case({"HTTPCACHE_ENABLED": True}),  # cold, then warm
    "cookies_debug": Case({"COOKIES_ENABLED": True, "COOKIES_DEBUG": True}),
    # A start delay of 5 s (the default) would take the crawl past the
    # matrix's time budget without changing what is tested.
    "autothrottle": Case(
        {
            "AUTOTHROTTLE_ENABLED": True,
            "AUTOTHROTTLE_START_DELAY": 0.1,
            "AUTOTHROTTLE_MAX_DELAY": 1.0,
        }
    ),
    # Any delay puts the site's slot in charge of the pace (one request at a
    # time, each after the delay); 0.05 s took the crawl to 13 s.
    "download_delay": Case({"DOWNLOAD_DELAY": 0.02}),
    # The outage comes before any item: started by the count's own item, it
    # raced the close (a new connection to the refusing gateway, or none,
    # before the engine stopped sending: 0 to 21 refusals from run to run),
    # and ten items earlier, items from responses already in hand could
    # reach the count first. The count's own item (the spider's handler runs
    # before the CloseSpider extension's) cuts the requests in flight, whose
    # copies reach the scheduler after the close began.
    "closespider_itemcount": Case(
        {"CLOSESPIDER_ITEMCOUNT": OUTAGE_AT},
        outage_at=0,
        cut_at=OUTAGE_AT,
        counted="reached",
        finish_reason="closespider_itemcount",
    ),
    # Index at depth 0, items at 1, follow-ups at 2: the follow-ups are
    # dropped. Only the 40 item pages make items: go away earlier, with
    # fewer requests at once, so that most pages are still to be fetched.
    "depth_limit": Case({"DEPTH_LIMIT": 1, "CONCURRENT_REQUESTS": 8}, outage_at=10),
    # A key whose proxy refuses fails over to another one (another exit).
    "static_three_refuse": Case(static=True, sticky=False),
    # Issue 15: the site's requests over a pool of 8 warmed-up sessions,
    # each its own download slot; follow-ups keep their page's member.
    "session_pool_warmup": Case(
        {
            "STICKY_PROXY_SESSION_POOL": "host",
            "STICKY_PROXY_SESSION_SLOTS": True,
            "STICKY_PROXY_SESSION_SLOT_CONCURRENCY": 4,
            "STICKY_PROXY_WARMUP": "tests.spiders.warm_up",
        }
    ),
}


def with_hooks(*hooks: tuple[object, Callable[..., object]]) -> type[IndexSpider]:
    """An IndexSpider whose crawl calls each (signal, handler)'s handler on
    every signal (before any extension's handler of it: the spider is built
    first)."""

    class Hooked(IndexSpider):
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            for signal, handler in hooks:
                crawler.signals.connect(handler, signal=signal, weak=False)
            return spider

    return Hooked


@dataclass
class Run:
    result: CrawlResult
    spider: IndexSpider
    records: list[dict[str, Any]]
    record_text: str

    @property
    def stats(self) -> dict[str, Any]:
        return self.result.stats


async def run_case(
    case: Case, boxes: list[Sandbox], tmp_path: Path, name: str, **extra: Any
) -> Run:
    """One crawl of *case* with its outage; checks what every case must
    hold: it ends by itself, and every counted URL is an item or a record."""
    site = boxes[0]
    gave_up = tmp_path / f"{name}.jsonl"

    def outage() -> None:
        seconds = STATIC_OUTAGE if case.static else OUTAGE
        for box in boxes:
            box.gateway_refuse()
        for box in boxes:
            call_later(seconds, box.gateway_normal)

    def cut() -> None:
        for box in boxes:
            box.gateway_refuse()  # drops every connection
            box.gateway_normal()

    if case.static:
        # With a {session} placeholder each key has its own exit on each
        # proxy, so that 20 % of exits banning means what it does with the
        # gateway (without one, the list would have three exits in all).
        settings: dict[str, Any] = {
            "STICKY_PROXY_LIST": [
                box.gateway_url.replace(
                    f"{box.username}:", f"{box.username}-session-{{session}}:"
                )
                for box in boxes
            ],
            "STICKY_PROXY_BAN_PATTERNS": [r"g-recaptcha"],
        }
    else:
        settings = settings_for(site)
    settings.update(case.settings, STICKY_PROXY_GAVE_UP_FILE=str(gave_up), **extra)
    index = f"{site.site_url}/?n={N}"
    actions = {} if case.outage_at == 0 else {case.outage_at: outage}
    if case.cut_at is not None:
        actions[case.cut_at] = cut
    hooks = [(signals.item_scraped, at_counts(actions))]
    if case.outage_at == 0:
        index_answered = at_counts({1: outage})
        hooks.append(
            (
                signals.response_received,
                lambda request, **_: request.url == index and index_answered(),
            )
        )
    spidercls = with_hooks(*hooks)
    result = await crawl_within(
        DEADLINE,
        spidercls,
        settings,
        base=site.site_url,
        n=N,
        redirects=case.redirects,
    )
    spider = result.crawler.spider
    assert isinstance(spider, IndexSpider)
    text = gave_up.read_text()
    for box in boxes:
        assert_absent(box.password, text)
    run = Run(result, spider, records(gave_up), text)

    assert run.stats["finish_reason"] == case.finish_reason
    assert index in spider.answered
    # Every URL answered to the spider is one it asked for, and every page
    # or follow-up answered made one item.
    assert spider.answered <= spider.requested
    assert len(result.items) == len(spider.answered) - 1
    counted = spider.requested & (
        spider.reached if case.counted == "reached" else spider.scheduled
    )
    recorded = {r.get("url") for r in run.records}
    lost = sorted(counted - spider.answered - recorded)
    assert not lost, (len(lost), lost[:10], spider.failures[:10], run.stats)
    outcomes = [r.get("outcome") for r in run.records]
    assert set(outcomes) <= RECORD_OUTCOMES, outcomes
    assert all(isinstance(r.get("reasons"), list) for r in run.records)
    return run


def expected_urls(base: str, case: Case) -> set[str]:
    page = "/r/{}" if case.redirects else "/item/{}"
    urls = {f"{base}/?n={N}"} | {base + page.format(i) for i in range(N)}
    if case.settings.get("DEPTH_LIMIT") != 1:
        urls |= {f"{base}/item/{i}/{p}" for i in range(N) for p in PARTS}
    return urls


PARTS = ("detail", "media", "thumb")


@pytest.fixture
def boxes(request: pytest.FixtureRequest) -> Iterator[list[Sandbox]]:
    case: Case = CASES[request.node.callspec.id]
    with ExitStack() as stack:
        if case.static:
            yield [
                stack.enter_context(Sandbox(password=f"matrix-static-pw-{i}"))
                for i in range(3)
            ]
        else:
            yield [stack.enter_context(Sandbox())]


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
@deferred_f_from_coro_f
async def test_matrix(name: str, boxes: list[Sandbox], tmp_path: Path) -> None:
    case = CASES[name]
    site = boxes[0]
    rule = ban_fraction(0.2, salt="matrix")
    if name == "session_pool_warmup":
        rule = after_warmup(rule)
    site.site.ban_rule = rule
    # Each answer sets a cookie bound to its exit, and a cookie presented
    # from another exit is banned: the jar must follow the session.
    site.site.ip_cookies = True
    cache_dir = tmp_path / "cache"
    extra = {"HTTPCACHE_DIR": str(cache_dir)} if name == "httpcache" else {}
    run = await run_case(case, boxes, tmp_path, "run", **extra)
    spider, stats = run.spider, run.stats

    # The scenario happened: exits were banned (with warm-ups, at their
    # warm-up), and the route went away.
    assert stats.get("sticky_proxy/bans", 0) >= 1
    went_away = (
        "sticky_proxy/failovers" if case.static else "sticky_proxy/outage_retries"
    )
    assert stats.get(went_away, 0) >= 1, stats
    if case.finish_reason == "finished":
        # Nothing was dropped before it was scheduled, but by DEPTH_LIMIT.
        expected = expected_urls(site.site_url, case)
        assert spider.requested >= expected
        assert spider.scheduled & spider.requested == expected
    foreign = [
        h
        for h in site.site.hits
        if foreign_ip_cookie(h.client_ip, h.headers.get("cookie", ""))
    ]
    assert not foreign, foreign[:3]
    if case.sticky:
        exits = exits_by_item(site, rule)
        split = {item: ips for item, ips in exits.items() if len(ips) > 1}
        assert not split
    if case.redirects:
        assert {f"{site.site_url}/r/{i}" for i in range(N)} <= spider.answered
    if name == "depth_limit":
        assert stats["request_depth_max"] == 1
        assert not [h for h in site.site.hits if h.path.count("/") == 3]
    if name == "httpcache":
        await check_warm_cache(case, boxes, tmp_path, run)
    if name == "session_pool_warmup":
        warmed = stats["sticky_proxy/warmup/succeeded"]
        # Each ban burned a warm session: its member warmed up the next.
        # (An outage fails no warm-up: it is sent again.)
        assert warmed >= 8 + 1 and "sticky_proxy/warmup/failed" not in stats
        exits = {h.client_ip for h in site.site.hits if h.path != "/warmup"}
        assert len(exits) == warmed  # one warm-up per session used


def after_warmup(rule: Callable[[str, str], str | None]) -> Any:
    """*rule*, and the first exit the site sees banned too (the pool's 8
    exits may all be good ones), but never at /warmup: sessions warm up,
    then the site bans some of them mid-crawl."""
    first: list[str] = []

    def banning(ip: str, path: str) -> str | None:
        if path == "/warmup":
            return None
        first[:] = first or [ip]
        return "403" if ip == first[0] else rule(ip, path)

    return banning


async def check_warm_cache(
    case: Case, boxes: list[Sandbox], tmp_path: Path, cold: Run
) -> None:
    """The cold run stored one good page per URL answered and no ban page;
    a second run on that cache is answered entirely from it (the site bans
    everyone now), and loses nothing."""
    site, cache_dir = boxes[0], tmp_path / "cache"
    stored = cached_responses(cache_dir)
    assert all(status == 200 and b"g-recaptcha" not in body for status, body in stored)
    assert len(stored) == len(cold.spider.answered)

    site.reset()
    site.site.ban_rule = ban_all("403")
    warm = await run_case(case, boxes, tmp_path, "warm", HTTPCACHE_DIR=str(cache_dir))
    assert warm.spider.answered == cold.spider.answered
    assert warm.stats["httpcache/hit"] == len(cold.spider.answered)
    assert warm.stats.get("httpcache/miss", 0) == 0
    assert warm.stats.get("sticky_proxy/bans", 0) == 0
    assert warm.records == []
    assert site.site.hits == []
