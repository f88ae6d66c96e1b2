"""The ledger (issue 10, defect 12): every request the middleware routed
ends as a response to the spider or as a record, whatever path it took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.utils.defer import deferred_f_from_coro_f, deferred_from_coro

from scrapy_sticky_proxy._connections import session_burned
from scrapy_sticky_proxy.ledger import sticky_middleware
from scrapy_sticky_proxy.sandbox import Sandbox, ban_all

from .conftest import records
from .spiders import ItemsSpider, at_counts, hooked
from .test_crawl import settings_for
from .test_gates import crawl_within
from .test_jobdir import first_visits


def page_urls(sandbox: Sandbox, n: int) -> set[str]:
    return {f"{sandbox.site_url}/item/{i}" for i in range(n)}


def delivered(result: Any, sandbox: Sandbox) -> set[str]:
    return {
        f"{sandbox.site_url}/item/{i['item']}"
        for i in result.items
        if i["part"] == "page"
    }


def with_queue(
    sandbox: Sandbox, tmp_path: Path, queue: str, **more: Any
) -> tuple[dict[str, Any], Path]:
    """Settings with a gave-up file, and JOBDIR for the "jobdir" queue."""
    gave_up = tmp_path / "gave_up.jsonl"
    extra = {"JOBDIR": str(tmp_path / "job")} if queue == "jobdir" else {}
    extra.update(more)
    return settings_for(
        sandbox, STICKY_PROXY_GAVE_UP_FILE=str(gave_up), **extra
    ), gave_up


@deferred_f_from_coro_f
async def test_a_slow_target_left_to_retry_middleware_is_recorded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Timeouts of a target that answers nobody are no ban: RetryMiddleware
    # retries them, then gives up; that end used to leave no record.
    sandbox.site.ban_rule = lambda ip, path: "hang"
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        DOWNLOAD_TIMEOUT=1,
        RETRY_TIMES=1,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
    )
    result = await crawl_within(
        60, ItemsSpider, settings, base=sandbox.site_url, n=6, follow=False
    )
    got = records(gave_up)
    assert {r["url"] for r in got} == page_urls(sandbox, 6)
    assert {r["outcome"] for r in got} == {"failed"}
    assert all(r["reasons"][-1] == "failed/DownloadTimeoutError" for r in got)
    assert result.stats["sticky_proxy/failed"] == 6
    assert result.stats.get("sticky_proxy/bans", 0) == 0


class RedirectedSpider(ItemsSpider):
    """Asks for /r/i, which redirects to /item/i (the first ``cross`` of
    them on the other host: 127.0.0.1 <-> localhost)."""

    cross = 0

    async def start(self) -> Any:
        for i in range(self.n):
            other = "?x=1" if i < self.cross else ""
            yield Request(f"{self.base}/r/{i}{other}", callback=self.parse_item)


@deferred_f_from_coro_f
async def test_a_failed_request_after_a_redirect_is_named_as_the_spider_made_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A record names the spider's request, as a give-up does: /r/i, not
    the /item/i it was redirected to (the request to replay). Before, a
    failed download after a redirect named the redirect's target."""
    sandbox.site.ban_rule = lambda ip, path: (
        "hang" if path.startswith("/item/") else None
    )
    # One at a time: no answer of the site while a page hangs, or the
    # timeout could be blamed on the exit (a ban, not left to RetryMiddleware).
    settings, gave_up = with_queue(
        sandbox,
        tmp_path,
        "memory",
        DOWNLOAD_TIMEOUT=1,
        RETRY_TIMES=0,
        CONCURRENT_REQUESTS=1,
    )
    await crawl_within(30, RedirectedSpider, settings, base=sandbox.site_url, n=3)
    got = records(gave_up)
    assert sorted(r["url"] for r in got) == [
        f"{sandbox.site_url}/r/{i}" for i in range(3)
    ]
    assert {r["reasons"][-1] for r in got} == {"failed/DownloadTimeoutError"}


class FollowsWithMeta(RedirectedSpider):
    """Each page (reached through /r/i) is followed to its detail page with
    ``meta=response.meta``, the redirect's trail included, and a
    ``download_maxsize`` it is past."""

    def parse_item(self, response: Any) -> Any:
        yield from super().parse_item(response)
        meta = {**response.meta, "download_maxsize": 10}  # fails: no ban
        yield response.follow(response.url + "/detail", self.parse_part, meta=meta)


@deferred_f_from_coro_f
async def test_a_failed_follow_up_built_from_response_meta_is_named_as_itself(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A follow-up built from a redirected response's meta carries that
    redirect's trail, which is not its own. It fails (past its
    download_maxsize: no ban), and its record names it. Before, the record
    named the page the spider asked for first (/r/i), which was delivered."""
    settings, gave_up = with_queue(sandbox, tmp_path, "memory")
    await crawl_within(
        30, FollowsWithMeta, settings, base=sandbox.site_url, n=2, follow=False
    )
    got = records(gave_up)
    assert sorted(r["url"] for r in got) == [
        f"{sandbox.site_url}/item/{i}/detail" for i in range(2)
    ]


@deferred_f_from_coro_f
async def test_a_gateway_resetting_at_accept_for_good_is_recorded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # 300 items gave 180 items and no record before: RetryMiddleware dropped
    # each reset request after its tries.
    Outage = hooked(signals.item_scraped, at_counts({10: sandbox.gateway_reset}))
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        STICKY_PROXY_OUTAGE_TIMEOUT=2,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        CONCURRENT_REQUESTS=8,
    )
    result = await crawl_within(
        60, Outage, settings, base=sandbox.site_url, n=60, follow=False
    )
    got = records(gave_up)
    assert delivered(result, sandbox) | {r["url"] for r in got} == page_urls(
        sandbox, 60
    )
    assert not delivered(result, sandbox) & {r["url"] for r in got}
    assert {r["reasons"][-1] for r in got} == {"unreachable/outage"}


@deferred_f_from_coro_f
async def test_a_request_another_middleware_drops_is_recorded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_IGNORE_MISSING=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
    )
    await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=5, follow=False
    )
    got = records(gave_up)
    assert {r["url"] for r in got} == page_urls(sandbox, 5)
    assert {r["reasons"][-1] for r in got} == {"failed/IgnoreRequest"}


@deferred_f_from_coro_f
async def test_copies_waiting_in_the_scheduler_at_close_are_recorded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # The spider closes during an outage: the copies of requests that failed
    # in flight are in the scheduler, which forgets them. The gateway does
    # not come back: a timer to bring it back fired in the next test, into
    # its log ("Exception in callback": this sandbox was stopped by then).
    Outage = hooked(signals.item_scraped, at_counts({8: sandbox.gateway_refuse}))
    gave_up = tmp_path / "gave_up.jsonl"
    reached: set[str] = set()

    class Spider(Outage):  # type: ignore[misc,valid-type]
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            crawler.signals.connect(
                lambda request, spider: reached.add(request.url),
                signal=signals.request_reached_downloader,
                weak=False,
            )
            return spider

    settings = settings_for(
        sandbox,
        CLOSESPIDER_TIMEOUT=3,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        CONCURRENT_REQUESTS=16,
    )
    result = await crawl_within(
        40, Spider, settings, base=sandbox.site_url, n=200, follow=False
    )
    assert result.stats["finish_reason"] == "closespider_timeout"
    got = records(gave_up)
    recorded = {r["url"] for r in got}
    assert reached - delivered(result, sandbox) <= recorded
    assert not recorded & delivered(result, sandbox)
    assert {r["reasons"][-1] for r in got} <= {
        "spider_closing",
        "lost/spider_closed",
    }


@deferred_f_from_coro_f
async def test_a_lost_copy_s_record_holds_every_verdict(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The spider closes right after a ban, its re-roll copy not yet sent:
    the record is the copy's, with every ban verdict the request met (it
    was the last request routed, one verdict short)."""
    sandbox.site.ban_rule = ban_all("403")
    gave_up = tmp_path / "gave_up.jsonl"

    class Closing(ItemsSpider):
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            burns: list[str] = []

            def burned(request: Any) -> None:
                burns.append(request.url)
                if len(burns) == 2:
                    engine = crawler.engine
                    if hasattr(engine, "close_spider_async"):
                        deferred_from_coro(engine.close_spider_async(reason="test"))
                    else:  # Scrapy < 2.14
                        engine.close_spider(spider, "test")

            crawler.signals.connect(burned, signal=session_burned, weak=False)
            return spider

    settings = settings_for(
        sandbox,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        STICKY_PROXY_MAX_REROLLS=5,
        CONCURRENT_REQUESTS=1,
    )
    result = await crawl_within(20, Closing, settings, base=sandbox.site_url, n=1)
    assert result.stats["finish_reason"] == "test"
    [record] = records(gave_up)
    assert record["reasons"] == ["status/403", "status/403", "lost/spider_closed"]
    assert record["attempts"] == 3


@pytest.mark.parametrize("queue", ["jobdir", "scrapy-redis"])
@deferred_f_from_coro_f
async def test_a_queue_that_persists_owns_what_it_holds(
    sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest, queue: str
) -> None:
    """With JOBDIR or scrapy-redis (SCHEDULER_PERSIST), a scheduled copy is
    the queue's: the ledger let go of it. Before, it held every re-roll
    copy waiting in the queue, in memory (a JOBDIR's disk queue then kept
    them in memory too), and with a queue two crawlers share it never let
    go of the copies the other one took (1,353 after a run of two)."""
    sandbox.site.ban_rule = first_visits(*(f"/item/{i}" for i in range(20)))
    extra: dict[str, Any] = {"JOBDIR": str(tmp_path / "job")}
    if queue == "scrapy-redis":
        url = request.getfixturevalue("redis_db")
        extra = {
            "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
            "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
            "SCHEDULER_SERIALIZER": "scrapy_sticky_proxy.serializer",
            "SCHEDULER_PERSIST": True,
            "REDIS_URL": url,
        }
    held: list[int] = []

    def response_received(spider: Any) -> None:
        held.append(len(sticky_middleware(spider.crawler).ledger))

    settings = settings_for(sandbox, CONCURRENT_REQUESTS=2, **extra)
    spider = hooked(signals.response_received, response_received)
    result = await crawl_within(
        60, spider, settings, base=sandbox.site_url, n=20, follow=False
    )
    assert delivered(result, sandbox) == page_urls(sandbox, 20)
    assert result.stats["sticky_proxy/rerolls"] == 20
    # In flight (2 at once) and the response being judged; before: up to
    # the 20 re-roll copies waiting behind the first visits.
    assert max(held) <= 3, held


def first_visits_to_one_captcha(*paths: str) -> Any:
    """Sends the first request for each of *paths* to one captcha URL."""
    first = first_visits(*paths)
    return lambda client_ip, path: first(client_ip, path) and "redirect-one"


@pytest.mark.parametrize("queue", ["memory", "jobdir"])
@deferred_f_from_coro_f
async def test_a_redirect_the_dupefilter_drops_is_recorded(
    sandbox: Sandbox, tmp_path: Path, queue: str
) -> None:
    """A site that sends every banned exit to one captcha URL: the first
    redirect is fetched, judged a ban and re-rolled; Scrapy's dupefilter
    drops the others before they reach us. Their pages got no response:
    each is a failed record naming the spider's request. Before: closed
    with no record, the crawl "finished" three items short."""
    sandbox.site.ban_rule = first_visits_to_one_captcha("/item/1", "/item/2", "/item/3")
    settings, gave_up = with_queue(sandbox, tmp_path, queue)
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=6, follow=False
    )
    got = records(gave_up)
    assert result.stats["dupefilter/filtered"] == 2
    assert result.stats["sticky_proxy/failed"] == 2
    assert [r["reasons"] for r in got] == [["dropped/duplicate"]] * 2
    assert {r["url"] for r in got} | delivered(result, sandbox) == page_urls(sandbox, 6)
    assert len(delivered(result, sandbox)) == 4


@pytest.mark.parametrize("queue", ["memory", "jobdir"])
@deferred_f_from_coro_f
async def test_a_request_dropped_past_the_redirect_limit_is_recorded(
    sandbox: Sandbox, tmp_path: Path, queue: str
) -> None:
    """Three item pages always answer with a redirect, and the crawl allows
    none (REDIRECT_MAX_TIMES = 0): RedirectMiddleware drops each on its way
    back with an IgnoreRequest that no middleware sees. Each is a failed
    record naming the page. Before, with JOBDIR, no record at all (and
    without, a record only because the close found it open)."""
    dropped = {"/item/1", "/item/2", "/item/3"}
    sandbox.site.ban_rule = lambda ip, path: "redirect" if path in dropped else None
    settings, gave_up = with_queue(sandbox, tmp_path, queue, REDIRECT_MAX_TIMES=0)
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=6, follow=False
    )
    got = records(gave_up)
    assert sorted(r["url"] for r in got) == sorted(
        sandbox.site_url + p for p in dropped
    )
    assert [r["reasons"] for r in got] == [["lost/spider_closed"]] * 3
    assert result.stats["sticky_proxy/failed"] == 3
    assert len(delivered(result, sandbox)) == 3


class OnSiteSpider(RedirectedSpider):
    """Follows redirects to its own host only (``allowed_domains``); two of
    its pages redirect to localhost."""

    cross = 2

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.allowed_domains = ["127.0.0.1"]


@pytest.mark.parametrize("queue", ["memory", "jobdir"])
@deferred_f_from_coro_f
async def test_a_redirect_offsite_middleware_drops_is_recorded(
    sandbox: Sandbox, tmp_path: Path, queue: str
) -> None:
    """Two of five pages redirect to another host, which the spider's
    allowed_domains leave out: Scrapy's OffsiteMiddleware drops the copies
    as they are scheduled. Each is a failed record naming the spider's
    request: at once with JOBDIR (dropped/offsite), at the close without.
    Before, with JOBDIR, no record."""
    settings, gave_up = with_queue(sandbox, tmp_path, queue)
    result = await crawl_within(
        30, OnSiteSpider, settings, base=sandbox.site_url, n=5, follow=False
    )
    got = records(gave_up)
    reason = "dropped/offsite" if queue == "jobdir" else "lost/spider_closed"
    assert sorted(r["url"] for r in got) == [
        f"{sandbox.site_url}/r/{i}?x=1" for i in range(2)
    ]
    assert [r["reasons"] for r in got] == [[reason]] * 2
    assert result.stats["offsite/filtered"] == 2
    assert result.stats["sticky_proxy/failed"] == 2
    assert len(result.items) == 3
