"""One connection per session (issue 16): a session's requests take turns
on its keep-alive connection (or tunnel) instead of opening one each."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from scrapy import Request, Spider, signals
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy._connections import SessionTurns
from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

from .conftest import BASE_SETTINGS, crawl
from .spiders import ItemsSpider, hooked, item_of
from .test_crawl import exits_by_item, settings_for
from .test_gates import crawl_within

ITEMS = 100


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_one_connection_per_session(
    pinning_sandbox: Sandbox, scheme: str
) -> None:
    """N items with 3 follow-ups each open at most N x 1.1 + concurrency
    connections to the gateway (about 3N before: each follow-up found its
    session's connection busy and opened its own), and every follow-up
    still leaves through its page's exit on a gateway that pins the exit
    per connection."""
    sandbox = pinning_sandbox
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    handlers: list[Any] = []
    spider = hooked(signals.response_received, _handler_of(scheme, handlers))
    result = await crawl(spider, settings_for(sandbox), base=base, n=ITEMS)
    assert len(result.items) == 4 * ITEMS
    turns = handlers[0].turns
    assert turns.handed > 0 and turns.keys == 0  # none held after the crawl
    accepted = sandbox.gateway.connections_accepted
    assert accepted <= ITEMS * 1.1 + BASE_SETTINGS["CONCURRENT_REQUESTS"], accepted
    seen = exits_by_item(sandbox)
    assert len(seen) == ITEMS
    assert all(len(exits) == 1 for exits in seen.values())
    assert len({next(iter(exits)) for exits in seen.values()}) == ITEMS


@deferred_f_from_coro_f
async def test_turns_can_be_switched_off(sandbox: Sandbox) -> None:
    """STICKY_PROXY_CONNECTIONS_PER_SESSION = 0: Scrapy's way, a follow-up
    that finds its session's connection busy opens another."""
    settings = settings_for(sandbox, STICKY_PROXY_CONNECTIONS_PER_SESSION=0)
    result = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=30)
    assert len(result.items) == 120
    assert sandbox.gateway.connections_accepted > 2 * 30


@deferred_f_from_coro_f
async def test_no_waiting_for_a_connection_that_does_not_come_back(
    sandbox: Sandbox,
) -> None:
    """Requests that close their connection (Connection: close; a site that
    closes a tunnel): a session's waiting requests are let go at once when
    the turn ends without a connection to reuse, not one by one."""
    handlers: list[Any] = []
    spider = hooked(signals.response_received, _handler_of("http", handlers))
    settings = settings_for(sandbox, DEFAULT_REQUEST_HEADERS={"Connection": "close"})
    result = await crawl(spider, settings, base=sandbox.site_url, n=20)
    assert len(result.items) == 80
    assert sandbox.gateway.connections_accepted == 80
    turns = handlers[0].turns
    assert turns.handed == 0 and turns.let_go > 0 and turns.keys == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_burned_sessions_idle_connection_is_closed(
    sandbox: Sandbox, scheme: str
) -> None:
    """A banned page's session is burned and never sends again: its
    connection (or tunnel), idle once the ban's response is read, is closed
    at the ban. It used to stay idle until the cap or Twisted's 4-minute
    timeout: when the crawl went idle, the pool held one connection per
    session that fetched its page and one per burned session."""
    sandbox.site.ban_rule = ban_fraction(0.2)
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    idle: list[int] = []
    handlers: list[Any] = []
    keep = _handler_of(scheme, handlers)

    def at_idle(spider: Any) -> None:
        if handlers and not idle:
            idle.append(handlers[0]._pool.idle_connections)

    class Spider(hooked(signals.response_received, keep)):  # type: ignore[misc]
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            crawler.signals.connect(at_idle, signal=signals.spider_idle, weak=False)
            return spider

    result = await crawl(Spider, settings_for(sandbox), base=base, n=50, follow=False)
    bans = result.stats.get("sticky_proxy/bans", 0)
    assert bans > 0 and len(result.items) == 50
    assert idle == [50]
    assert handlers[0]._pool.closed_burned == bans


class _FirstVisitBanned:
    """The first request of each path of every fifth item is answered 403:
    a challenge of the request, whatever the exit."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.lock = threading.Lock()  # the site answers on its own thread

    def __call__(self, client_ip: str, path: str) -> str | None:
        item = item_of(path)
        if item is None or item % 5:
            return None
        with self.lock:
            if path in self.seen:
                return None
            self.seen.add(path)
        return "403"


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_static_proxy_with_one_login_is_every_sessions(
    sandbox: Sandbox, scheme: str
) -> None:
    """STICKY_PROXY_LIST with user:password and no {session}: every session
    sends the same header, so its connections are everyone's. Sessions used
    to take turns on one connection (one request at a time through the
    proxy: almost every request waited), and a ban closed the idle
    connections all sessions shared. Now they take no turns and lose no
    connection to a ban: a few connections, as Scrapy's own handler opens."""
    sandbox.site.ban_rule = _FirstVisitBanned()
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    handlers: list[Any] = []
    spider = hooked(signals.response_received, _handler_of(scheme, handlers))
    settings = {"STICKY_PROXY_LIST": [sandbox.gateway_url]}
    result = await crawl(spider, settings, base=base, n=50)
    assert len(result.items) == 200
    assert result.stats["sticky_proxy/bans"] >= 10
    handler = handlers[0]
    assert handler.turns.waited == 0
    assert handler._pool.closed_burned == 0
    accepted = sandbox.gateway.connections_accepted
    assert accepted <= 2 * BASE_SETTINGS["CONCURRENT_REQUESTS"], accepted  # 32 seen


class _OwnProxySpider(Spider):
    """Pages through a proxy of the spider's own, login included, in meta:
    requests the middleware leaves alone."""

    name = "own_proxy"

    def __init__(self, base: str, proxy: str, n: int, **kw: Any):
        super().__init__(**kw)
        self.base, self.proxy, self.n = base, proxy, n
        self.handler: Any = None

    async def start(self) -> AsyncIterator[Request]:
        for i in range(self.n):
            yield Request(f"{self.base}/item/{i}", meta={"proxy": self.proxy})

    def parse(self, response: Any) -> dict[str, Any]:
        if self.handler is None:
            scheme = response.url.partition(":")[0]
            self.handler = self.crawler.engine.downloader.handlers._get_handler(scheme)
        return {"url": response.url}


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_proxy_of_the_spiders_own_takes_no_turns(
    sandbox: Sandbox, scheme: str
) -> None:
    """``meta["proxy"]`` with a login, set by the spider: not routed, no
    session, one header for every request. They used to take turns on one
    connection (199 of 200 requests waited, 1 connection); now they go as
    in Scrapy."""
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    spiders: list[Any] = []
    spider = _keeping(_OwnProxySpider, spiders)
    result = await crawl(
        spider, settings_for(sandbox), base=base, proxy=sandbox.gateway_url, n=100
    )
    assert len(result.items) == 100
    assert result.stats["sticky_proxy/user_proxy"] == 100  # none routed by us
    assert spiders[0].handler.turns.waited == 0
    accepted = sandbox.gateway.connections_accepted
    assert accepted <= 2 * BASE_SETTINGS["CONCURRENT_REQUESTS"], accepted


class _PagesAndPoolSpider(Spider):
    """Each item page on its own URL session, each page followed by a
    request of the pool ``listing`` (sessions ``pool:listing#0`` .. ``#3``,
    in turn). Records each response's session key, the exit the site saw
    and, when the crawl goes idle, the handler's idle connections."""

    name = "pages_and_pool"

    def __init__(
        self,
        base: str,
        n: int,
        pooled_only: bool = False,
        pools: tuple[str, ...] = ("listing",),
        **kw: Any,
    ):
        super().__init__(**kw)
        self.base, self.n, self.pooled_only = base, n, pooled_only
        self.pools = pools  # in blocks: the first n / len(pools) go to the first
        self.handler: Any = None
        self.idle: list[int] = []

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.at_idle, signal=signals.spider_idle)
        return spider

    def at_idle(self) -> None:
        if self.handler is not None and not self.idle:
            self.idle.append(self.handler._pool.idle_connections)

    async def start(self) -> AsyncIterator[Request]:
        for i in range(self.n):
            if not self.pooled_only:
                yield Request(f"{self.base}/item/{i}", dont_filter=True)
            pool = {"sticky_proxy_pool": self.pools[i * len(self.pools) // self.n]}
            yield Request(f"{self.base}/item/{i}/detail", meta=pool)

    def parse(self, response: Any) -> dict[str, Any]:
        if self.handler is None:
            scheme = response.url.partition(":")[0]
            handlers = self.crawler.engine.downloader.handlers
            self.handler = handlers._get_handler(scheme)
        is_json = response.url.endswith("/detail")
        seen = (
            response.json()["client"]
            if is_json
            else response.css("#client::text").get()
        )
        return {"key": response.meta["sticky_proxy_key"], "exit": seen}


def _exits_by_key(items: list[dict[str, Any]]) -> dict[str, set[str]]:
    exits: dict[str, set[str]] = {}
    for item in items:
        exits.setdefault(item["key"], set()).add(item["exit"])
    return exits


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_url_sessions_do_not_push_out_a_pools_connections(
    pinning_sandbox: Sandbox, scheme: str
) -> None:
    """With more URL sessions than STICKY_PROXY_POOL_MAX_IDLE, the idle
    cap used to close the oldest idle connections, which were the pool
    members' (each comes back only after the others' turns): every pool
    request opened a connection (120 for these 60 pages and 60 pool
    requests). URL sessions' idle connections now go first: 64, one per URL
    session and one per member. The cap still holds, and every session
    keeps one exit on a gateway that pins the exit per connection."""
    sandbox, n, cap = pinning_sandbox, 60, 6
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    settings = settings_for(
        sandbox,
        STICKY_PROXY_SESSION_POOL_SIZES={"listing": 4},
        STICKY_PROXY_POOL_MAX_IDLE=cap,
        CONCURRENT_REQUESTS=2,
    )
    spider: list[Any] = []
    crawler_spider = _keeping(_PagesAndPoolSpider, spider)
    result = await crawl(crawler_spider, settings, base=base, n=n)
    exits = _exits_by_key(result.items)
    assert len(result.items) == 2 * n and len(exits) == n + 4
    assert all(len(seen) == 1 for seen in exits.values()), exits
    pooled = Counter(i["key"] for i in result.items if i["key"].startswith("pool:"))
    assert pooled == {f"pool:listing#{i}": n // 4 for i in range(4)}
    accepted = sandbox.gateway.connections_accepted
    assert accepted <= n + 4 + settings["CONCURRENT_REQUESTS"], accepted
    assert spider[0].idle and spider[0].idle[0] <= cap


@deferred_f_from_coro_f
async def test_a_pool_larger_than_the_cap_keeps_what_it_can(
    pinning_sandbox: Sandbox,
) -> None:
    """No URL session idle: over the cap, the oldest idle connection of any
    session was closed. A pool of 16 members with 8 kept idle, at 4
    requests at once, then lost every connection before its member's turn
    came back: 160 connections for 160 requests. The pool's newest now goes
    instead, so the older members keep theirs: at most 16 for the first
    turn, then one in two (and the requests in flight). The cap still
    holds, and every member keeps one exit."""
    sandbox, n, members, cap = pinning_sandbox, 160, 16, 8
    settings = settings_for(
        sandbox,
        STICKY_PROXY_SESSION_POOL_SIZES={"listing": members},
        STICKY_PROXY_POOL_MAX_IDLE=cap,
        CONCURRENT_REQUESTS=4,
    )
    spider: list[Any] = []
    crawler_spider = _keeping(_PagesAndPoolSpider, spider)
    result = await crawl(
        crawler_spider, settings, base=sandbox.site_url, n=n, pooled_only=True
    )
    assert len(result.items) == n
    exits = _exits_by_key(result.items)
    assert len(exits) == members and all(len(e) == 1 for e in exits.values()), exits
    assert spider[0].idle and spider[0].idle[0] <= cap
    bound = members + (n - members) * (members - cap) // members + 4
    assert sandbox.gateway.connections_accepted <= bound, bound


@deferred_f_from_coro_f
async def test_a_pool_done_with_gives_way_to_the_next(sandbox: Sandbox) -> None:
    """Over the cap, a pool's newest connection is closed only when the
    oldest is its own pool's: the members of a pool crawled earlier go
    first, so the next pool keeps all of its members' connections."""
    n, members, cap = 120, 6, 8
    settings = settings_for(
        sandbox,
        STICKY_PROXY_SESSION_POOL_SIZES={"a": members, "b": members},
        STICKY_PROXY_POOL_MAX_IDLE=cap,
        CONCURRENT_REQUESTS=2,
    )
    spider: list[Any] = []
    crawler_spider = _keeping(_PagesAndPoolSpider, spider)
    result = await crawl(
        crawler_spider,
        settings,
        base=sandbox.site_url,
        n=n,
        pooled_only=True,
        pools=("a", "b"),
    )
    assert len(result.items) == n
    assert len(_exits_by_key(result.items)) == 2 * members
    assert spider[0].idle and spider[0].idle[0] <= cap
    assert sandbox.gateway.connections_accepted <= 2 * members + 2


def _keeping(cls: type[Spider], into: list[Any]) -> type[Spider]:
    """*cls*, whose instance is appended to *into* when the crawler makes it."""

    class Kept(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            spider = super().from_crawler(crawler, *args, **kwargs)
            into.append(spider)
            return spider

    return Kept


def _handler_of(scheme: str, into: list[Any]) -> Any:
    def keep(response: Any, request: Any, spider: Any) -> None:
        if not into:
            into.append(spider.crawler.engine.downloader.handlers._get_handler(scheme))

    return keep


def test_gateway_counts_accepted_connections_until_reset(sandbox: Sandbox) -> None:
    import urllib.request

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": sandbox.gateway_url})
    )
    for _ in range(2):
        with opener.open(sandbox.site_url + "/item/1", timeout=10) as response:
            response.read()
    assert sandbox.gateway.connections_accepted == 2
    sandbox.reset()
    assert sandbox.gateway.connections_accepted == 0


# SessionTurns on its own, on the reactor's loop.


@deferred_f_from_coro_f
async def test_turns_are_per_key_and_first_come_first_served() -> None:
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    assert await turns.take("b", 10)  # another session does not wait
    order: list[str] = []

    async def second(name: str) -> None:
        assert await turns.take("a", 10)
        order.append(name)

    waiting = [asyncio.ensure_future(second(n)) for n in ("x", "y")]
    await asyncio.sleep(0)  # a yield: both queue up
    assert order == [] and turns.waited == 2
    turns.give_back("a")
    await waiting[0]
    assert order == ["x"]
    turns.give_back("a")
    await waiting[1]
    assert order == ["x", "y"]
    turns.give_back("a")
    turns.give_back("b")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_a_limit_of_two_lets_two_through() -> None:
    turns = SessionTurns(2)
    assert await turns.take("a", 10)
    assert await turns.take("a", 10)
    third = asyncio.ensure_future(turns.take("a", 10))
    await asyncio.sleep(0)
    assert not third.done()
    turns.give_back("a")
    assert await third
    for _ in range(2):
        turns.give_back("a")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_without_a_connection_to_reuse_every_waiter_goes() -> None:
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    waiting = [asyncio.ensure_future(turns.take("a", 10)) for _ in range(2)]
    await asyncio.sleep(0)  # a yield: the two queue up
    turns.give_back("a", reused=False)
    assert all([await w for w in waiting])
    assert turns.let_go == 2 and turns.handed == 0
    for _ in range(2):
        turns.give_back("a")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_past_two_waiting_a_request_goes_at_once() -> None:
    """A session with more requests than its connection carries (a site's
    key) is not sent one at a time: two wait, the others go at once."""
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    waiting = [asyncio.ensure_future(turns.take("a", 10)) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    assert await turns.take("a", 10) and await turns.take("a", 10)
    assert turns.overflowed == 2 and turns.waited == 2
    for _ in range(5):
        turns.give_back("a")
    assert all([await w for w in waiting]) and turns.keys == 0


@deferred_f_from_coro_f
async def test_once_closed_no_request_waits() -> None:
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    waiting = asyncio.ensure_future(turns.take("a", 10))
    await asyncio.sleep(0)
    turns.close()  # the spider closes: the waiter goes, without a turn
    assert await waiting is False
    assert await turns.take("a", 10) is False
    turns.give_back("a")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_a_wait_is_bounded() -> None:
    """A turn that is never given back: the waiter goes without one after
    its timeout, and giving the turn back later leaves nothing behind."""
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    assert not await turns.take("a", 0.01)
    assert turns.timed_out == 1
    turns.give_back("a")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_each_wait_keeps_its_own_bound() -> None:
    """One timer watches every waiter: a later waiter with a shorter
    timeout still goes at its own deadline, and the earlier one keeps
    waiting for its turn."""
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    patient = asyncio.ensure_future(turns.take("a", 10))
    await asyncio.sleep(0)
    assert not await turns.take("a", 0.01)
    assert turns.timed_out == 1 and not patient.done()
    turns.give_back("a")
    assert await patient
    turns.give_back("a")
    assert turns.keys == 0


@deferred_f_from_coro_f
async def test_closing_lets_every_waiter_go() -> None:
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    waiting = [asyncio.ensure_future(turns.take(k, 10)) for k in ("a", "a")]
    await asyncio.sleep(0)
    turns.close()
    assert [await w for w in waiting] == [False, False]
    turns.give_back("a")
    assert turns.keys == 0


@pytest.mark.parametrize("handed", [False, True], ids=["waiting", "handed a turn"])
@deferred_f_from_coro_f
async def test_a_cancelled_waiter_passes_its_turn_on(handed: bool) -> None:
    """A download cancelled while it waits (or once its turn was handed to
    it, before it could use it) leaves the queue; the turn goes on."""
    turns = SessionTurns(1)
    assert await turns.take("a", 10)
    cancelled = asyncio.ensure_future(turns.take("a", 10))
    after = asyncio.ensure_future(turns.take("a", 10))
    await asyncio.sleep(0)
    if handed:
        turns.give_back("a")  # to *cancelled*, which has not run since
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    if not handed:
        turns.give_back("a")
    assert await after
    turns.give_back("a")
    assert turns.keys == 0


def test_bad_connections_per_session() -> None:
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy import ConfigError, StickyProxyDownloadHandler

    crawler = get_crawler(settings_dict={"STICKY_PROXY_CONNECTIONS_PER_SESSION": -1})
    with pytest.raises(ConfigError, match="STICKY_PROXY_CONNECTIONS_PER_SESSION"):
        StickyProxyDownloadHandler(crawler)


def test_one_tunnel_is_one_turn_key_however_its_host_is_written() -> None:
    """The turn key of an https request was the URL's netloc: "h", "H" and
    "h:443" lead through one tunnel, but took turns apart."""
    from scrapy_sticky_proxy.handler import _connection_key

    keys = {
        _connection_key(Request(url), "http://127.0.0.1:1", b"d")
        for url in (
            "https://shop.example/",
            "https://Shop.example:443/a",
            "https://user@shop.example/",
        )
    }
    assert len(keys) == 1
    other = _connection_key(
        Request("https://shop.example:8443/"), "http://127.0.0.1:1", b"d"
    )
    assert other not in keys


@deferred_f_from_coro_f
async def test_a_request_waiting_in_its_slot_leaves_on_the_new_session(
    sandbox: Sandbox,
) -> None:
    """One session for the site (key "host"), a download delay: every item
    page is routed at once, then waits its turn in the download slot. The
    site bans the first exit from its second request on. The third page,
    routed to the burned session before the ban, goes on the new one.
    Before, it went out through the burned exit: a second ban and a second
    re-roll for one banned exit, for as long as the slot's queue lasted."""
    seen: list[str] = []

    def rule(client_ip: str, path: str) -> str | None:
        seen.append(client_ip)
        return "403" if client_ip == seen[0] and len(seen) > 1 else None

    sandbox.site.ban_rule = rule
    settings = settings_for(
        sandbox,
        STICKY_PROXY_KEY="host",
        # Far longer than a loopback answer takes to be judged.
        DOWNLOAD_DELAY=0.75,
        DOWNLOAD_DELAY_JITTER=0,  # (an older Scrapy: ±50 %, still far longer)
    )
    result = await crawl(
        ItemsSpider, settings, base=sandbox.site_url, n=3, follow=False
    )
    assert sorted(i["item"] for i in result.items) == [0, 1, 2]
    assert seen.count(seen[0]) == 2  # the first page and the banned one
    stats = result.stats
    assert stats["sticky_proxy/bans"] == stats["sticky_proxy/rerolls"] == 1
    assert stats["sticky_proxy/stale_sessions"] == 1


@deferred_f_from_coro_f
async def test_a_moved_request_s_mark_ends_with_its_send(sandbox: Sandbox) -> None:
    """The crawl above: the page moved off the burned session is sent past
    the burned-session check once, as routed. The mark that lets it past is
    gone once it is sent. Before, it stayed in meta, and with it in every
    re-roll of that request and every follow-up built with
    meta=response.meta: all of them went out through burned sessions."""
    seen: list[str] = []

    def rule(client_ip: str, path: str) -> str | None:
        seen.append(client_ip)
        return "403" if client_ip == seen[0] and len(seen) > 1 else None

    marks: list[object] = []

    def response_received(response: Any) -> None:
        marks.append(response.meta.get("_sticky_proxy_moved"))

    sandbox.site.ban_rule = rule
    settings = settings_for(
        sandbox, STICKY_PROXY_KEY="host", DOWNLOAD_DELAY=0.75, DOWNLOAD_DELAY_JITTER=0
    )
    spider = hooked(signals.response_received, response_received)
    result = await crawl(spider, settings, base=sandbox.site_url, n=3, follow=False)
    assert result.stats["sticky_proxy/stale_sessions"] == 1
    assert len(marks) == 3  # the three pages (the ban went no further)
    assert not any(marks), marks


class TwoKeys(Spider):
    """Four pages on each of two session keys, in turn."""

    name = "two_keys"

    def __init__(self, base: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.base = base

    async def start(self) -> AsyncIterator[Any]:
        for i in range(8):
            key = f"k{i % 2}"
            yield Request(f"{self.base}/item/{i}", meta={"sticky_proxy_key": key})

    def parse(self, response: Any) -> Any:
        yield {"url": response.url}


@deferred_f_from_coro_f
async def test_a_moved_request_is_moved_once(sandbox: Sandbox) -> None:
    """With STICKY_PROXY_MAX_KEYS = 1 the second key's ban makes the store
    forget the first's: that key starts again at generation 0, its burned
    session. A request moved off that session was routed onto it again,
    moved again, and so on for ever (a CI run hung, growing by 10 MB/s).
    It is now moved once, then sent as routed."""
    seen: Counter[str] = Counter()

    def rule(client_ip: str, path: str) -> str | None:
        seen[client_ip] += 1
        return "403" if seen[client_ip] > 1 else None

    sandbox.site.ban_rule = rule
    settings = settings_for(
        sandbox,
        STICKY_PROXY_MAX_KEYS=1,
        DOWNLOAD_DELAY=0.1,
        DOWNLOAD_DELAY_JITTER=0,
    )
    result = await crawl_within(60, TwoKeys, settings, base=sandbox.site_url)
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert len(result.items) + stats.get("sticky_proxy/gave_up", 0) == 8
    assert 1 <= stats["sticky_proxy/stale_sessions"] <= 8, stats
