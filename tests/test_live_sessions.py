"""A session with no request left closes its idle connection (issue 16).

With one session per item, each finished item's connection used to stay
idle until ``STICKY_PROXY_POOL_MAX_IDLE`` (256) pushed it out: an open
socket at the provider, and objects in the crawler, per finished session.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy._live import LiveSessions
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import BASE_SETTINGS, crawl
from .spiders import ItemsSpider
from .test_crawl import exits_by_item, settings_for

ITEMS = 100
CONCURRENCY = BASE_SETTINGS["CONCURRENT_REQUESTS"]


@pytest.fixture
def requests_let_go() -> Iterator[None]:
    """pytest keeps every log record for its report, and Scrapy's debug
    records hold requests and responses (``Crawled (200) <GET ...>``): a
    request kept alive keeps its session's connection open, as any log
    handler that stores records would. Scrapy's debug records are not
    made in these crawls."""
    scrapy_logger = logging.getLogger("scrapy")
    level = scrapy_logger.level
    scrapy_logger.setLevel(logging.INFO)
    yield
    scrapy_logger.setLevel(level)


MODES: dict[str, dict[str, Any]] = {
    "memory queue": {},
    "JOBDIR": {"JOBDIR": "{tmp}/job"},
    "scrapy-redis": {},
    "breadth-first": {
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
    },
}


@pytest.mark.usefixtures("requests_let_go")
@pytest.mark.parametrize(
    ("mode", "scheme"), [(mode, "http") for mode in MODES] + [("memory queue", "https")]
)
@deferred_f_from_coro_f
async def test_a_finished_sessions_connection_is_closed(
    pinning_sandbox: Sandbox,
    mode: str,
    scheme: str,
    tmp_path: Any,
    request: pytest.FixtureRequest,
) -> None:
    """N items with 3 follow-ups each, one session per item: when the crawl
    has gone idle, no idle connection is left (before: N, one per finished
    session, up to the cap), while every item's follow-ups still reuse its
    page's connection and leave through its exit on a gateway that pins the
    exit per connection: depth-first, through JOBDIR's disk queue and
    scrapy-redis's queue (the follow-ups come back as new requests, and are
    not alive while they wait there) and breadth-first (every page before
    any follow-up)."""
    sandbox = pinning_sandbox
    idle: list[int] = []

    def at_idle() -> None:  # before the addon's receivers
        # A page's response and its selector hold each other: its request
        # goes at the collector's next pass (a crawl's own pass comes soon).
        gc.collect()

    def at_close(spider: Any) -> None:  # the pool is closed after this
        handler = spider.crawler.engine.downloader.handlers._get_handler(scheme)
        idle.append(handler._pool.idle_connections)

    class Spider(ItemsSpider):
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            crawler.signals.connect(at_idle, signal=signals.spider_idle, weak=False)
            crawler.signals.connect(at_close, signal=signals.spider_closed, weak=False)
            return spider

    extra = {k: str(v).format(tmp=tmp_path) for k, v in MODES[mode].items()}
    if mode == "scrapy-redis":
        redis_url = request.getfixturevalue("redis_db")
        extra.update(
            SCHEDULER="scrapy_redis.scheduler.Scheduler",
            DUPEFILTER_CLASS="scrapy_redis.dupefilter.RFPDupeFilter",
            SCHEDULER_SERIALIZER="scrapy_sticky_proxy.serializer",
            REDIS_URL=redis_url,
        )
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    result = await crawl(Spider, settings_for(sandbox, **extra), base=base, n=ITEMS)
    assert len(result.items) == 4 * ITEMS
    assert idle == [0]
    accepted = sandbox.gateway.connections_accepted
    assert accepted <= ITEMS * 1.1 + CONCURRENCY, accepted
    exits = exits_by_item(sandbox)
    assert len(exits) == ITEMS and all(len(e) == 1 for e in exits.values())


# LiveSessions on its own.


class _Pool:
    def __init__(self) -> None:
        self.closed: list[object] = []

    def close_idle(self, keys: Any) -> int:
        self.closed.extend(keys)
        return len(keys)


def _scheduled(crawler: Any, request: Request) -> None:
    crawler.signals.send_catch_log(signals.request_scheduled, request=request)


def test_a_key_is_done_when_its_last_request_is_gone() -> None:
    crawler = get_crawler()
    live = LiveSessions()
    pool = _Pool()
    live.register(pool, crawler.signals)
    page = Request("http://example.com/1")
    live.hold(page, "k")
    live.hold(page, "k")  # once per object
    live.used("k", ("conn", "k"))
    follow = Request("http://example.com/2", meta={"sticky_proxy_key": "k"})
    _scheduled(crawler, follow)
    del page
    live.sweep()
    assert pool.closed == [] and len(live) == 1  # the follow-up is alive
    del follow
    live.sweep()
    assert pool.closed == [("conn", "k")] and len(live) == 0
    live.sweep()
    assert live.closed == 1


def test_a_key_held_again_before_the_sweep_keeps_its_connection() -> None:
    live = LiveSessions()
    pool = _Pool()
    live.register(pool, get_crawler().signals)
    first = Request("http://example.com/1")
    live.hold(first, "k")
    live.used("k", "pool key")
    del first
    again = Request("http://example.com/1")
    live.hold(again, "k")  # the same session, back before the sweep
    live.sweep()
    assert pool.closed == [] and len(live) == 1


def test_pool_members_and_untrusted_keys_are_not_counted() -> None:
    crawler = get_crawler()
    live = LiveSessions()
    live.register(_Pool(), crawler.signals)
    member = Request("http://example.com/1", meta={"sticky_proxy_key": "pool:a#0"})
    odd = Request("http://example.com/2", meta={"sticky_proxy_key": ["not", "a key"]})
    page = Request("http://example.com/3", meta={"sticky_proxy_key": "k"})
    for request in (member, odd, page):
        _scheduled(crawler, request)
    assert len(live) == 1  # the page's key only


def test_nothing_is_counted_without_a_handler_of_ours() -> None:
    live = LiveSessions()  # no pool registered: nothing to close
    live.hold(Request("http://example.com/1"), "k")
    assert len(live) == 0
