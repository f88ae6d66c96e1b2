"""Session pools (issue 15, part 1): a site's requests spread over N
sessions, each its own download slot; bans replace members; processes on
one Redis share the N sessions. The core with plain values, then two real
crawls through the sandbox."""

from __future__ import annotations

import itertools
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from scrapy import Request, Spider, signals
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy import StickyProxyMiddleware
from scrapy_sticky_proxy import _meta as M
from scrapy_sticky_proxy._session_pools import SlotSettings, slot_name
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.providers import get_preset
from scrapy_sticky_proxy.routing.session_pools import (
    CACHED_KEYS,
    MAX_SIZE,
    SessionPoolPolicy,
    SessionPools,
    host_of,
    member_key,
)
from scrapy_sticky_proxy.sandbox import ProxyRecord, Sandbox

from .conftest import BASE_SETTINGS, crawl
from .spiders import ItemsSpider, hooked
from .test_crawl import exits_by_item, settings_for
from .test_redis_crawl import redis_settings

URL = "http://user-{session}:s3cret-pw@gw.example:8000"
POOL = {"STICKY_PROXY_SESSION_POOL": "host", "STICKY_PROXY_SESSION_SLOTS": True}

# -- the core ------------------------------------------------------------------


def test_a_pool_hands_out_its_members_in_turn_evenly_and_deterministically():
    pools = SessionPools(SessionPoolPolicy(sizes={"small.example": 3}))
    got = [pools.member("site.example") for _ in range(1000)]
    assert got[:9] == [*(member_key("site.example", i) for i in range(8)), got[0]]
    assert set(Counter(got).values()) == {125}  # 1000 / 8, exactly
    small = [pools.member("small.example") for _ in range(7)]
    assert small == [f"pool:small.example#{i}" for i in (0, 1, 2, 0, 1, 2, 0)]
    # Another process (another instance) gets the same members in the same turn.
    again = SessionPools(SessionPoolPolicy(sizes={"small.example": 3}))
    assert [again.member("site.example") for _ in range(1000)] == got


def test_pools_are_bounded_least_recently_used_out_first():
    pools = SessionPools(SessionPoolPolicy(size=2), max_pools=2)
    assert [pools.member(n) for n in "aab"] == ["pool:a#0", "pool:a#1", "pool:b#0"]
    pools.member("a")  # b is now the least recently used
    pools.member("c")
    assert len(pools) == 2 and (pools.made, pools.evicted) == (3, 1)
    assert pools.member("a") == "pool:a#1"  # a kept its turn
    assert pools.member("b") == "pool:b#0"  # b starts again: same sessions
    assert pools.evicted == 2


def test_big_pools_make_their_member_keys_when_their_turn_comes():
    """4096 pools of the largest size held 41 million keys (a reviewer
    measured 863 MB for 1,000 pools of 10,000); past CACHED_KEYS members a
    pool makes each key when asked for."""
    pools = SessionPools(SessionPoolPolicy(size=MAX_SIZE))
    tracemalloc.start()
    try:
        for i in range(200):
            pools.member(f"site-{i}.example")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak  # old code: about 170 MB
    got = [pools.member("site-0.example") for _ in range(MAX_SIZE + 1)]
    assert got[0] == member_key("site-0.example", 1)  # its turn went on
    assert got[-1] == got[0] and len(set(got)) == MAX_SIZE
    small = SessionPools(SessionPoolPolicy(size=CACHED_KEYS + 1))
    big = [small.member("a") for _ in range(2 * CACHED_KEYS + 2)]
    assert big == [member_key("a", i % (CACHED_KEYS + 1)) for i in range(len(big))]


@pytest.mark.parametrize(
    "url",
    [
        "http://Example.COM/a",
        "https://user:pw@shop.example.co.uk:8443/p?q=1#f",
        "http://[2001:DB8::1]:8080/x",
        "http://example.com./",
        "http://127.0.0.1:9/item/1",
        "http://h?x=@y",
        "data:text/plain,hi",
    ],
)
def test_the_host_is_urlsplits(url: str):
    expected = urlsplit(url).hostname
    assert host_of(url) == (expected.rstrip(".") if expected else None)


def parse(**values: Any) -> SessionPoolPolicy:
    return StickyProxyConfig.from_settings(
        Settings({"STICKY_PROXY_URL": URL, **values})
    ).session_pools


def test_settings_parse_and_bad_values_name_their_setting():
    assert parse() == SessionPoolPolicy()
    policy = parse(
        STICKY_PROXY_SESSION_POOL="Domain",
        STICKY_PROXY_SESSION_POOL_SIZE="4",
        STICKY_PROXY_SESSION_POOL_SIZES='{"big.example": 20}',
        STICKY_PROXY_SESSION_SLOTS="true",
        STICKY_PROXY_SESSION_SLOT_CONCURRENCY=2,
        STICKY_PROXY_SESSION_SLOT_DELAY=0.5,
    )
    assert (policy.span, policy.size, dict(policy.sizes)) == (
        "domain",
        4,
        {"big.example": 20},
    )
    assert (policy.slots, policy.slot_concurrency, policy.slot_delay) == (
        True,
        2,
        0.5,
    )
    assert parse(STICKY_PROXY_SESSION_POOL_SIZES={"a": 2}).size_of("a") == 2
    # Never 0 (see MIN_SLOT_DELAY); DOWNLOAD_DELAY unless set.
    assert parse(STICKY_PROXY_SESSION_SLOT_DELAY=0).slot_delay == 0.001
    assert parse(DOWNLOAD_DELAY=2).slot_delay == 2
    for name, value in [
        ("STICKY_PROXY_SESSION_POOL", "url"),
        ("STICKY_PROXY_SESSION_POOL_SIZE", 0),
        ("STICKY_PROXY_SESSION_POOL_SIZES", "{a: 2}"),
        ("STICKY_PROXY_SESSION_POOL_SIZES", {"a": 0}),
        ("STICKY_PROXY_SESSION_POOL_SIZES", {"": 2}),
        ("STICKY_PROXY_SESSION_POOL_SIZES", ["a"]),
        ("STICKY_PROXY_SESSION_SLOTS", 2),
        ("STICKY_PROXY_SESSION_SLOT_CONCURRENCY", 0),
        ("STICKY_PROXY_SESSION_SLOT_DELAY", -1),
    ]:
        with pytest.raises(ConfigError) as info:
            parse(**{name: value})
        assert info.value.setting == name


def test_the_users_download_slots_entry_wins():
    slots = SlotSettings({"sticky_proxy:pool:a#0": {"concurrency": 4}}, {"x": 1})
    assert slots.get("sticky_proxy:pool:a#0", {}) == {"concurrency": 4}
    assert slots.get("sticky_proxy:pool:a#1", {}) == {"x": 1}
    assert slots.get("example.com", {}) == {}
    assert slot_name("pool:a#1\x00DE") == "sticky_proxy:pool:a#1@DE"


def test_the_middlewares_side_keys_and_slots():
    crawler = get_crawler(
        Spider,
        {
            **BASE_SETTINGS,
            "STICKY_PROXY_URL": URL,
            "STICKY_PROXY_SESSION_POOL": "domain",
            "STICKY_PROXY_KEY": "host",
        },
    )
    crawler.spider = Spider("pools")
    mw = StickyProxyMiddleware(crawler)
    pools = mw.pools
    named = Request("http://www.shop.co.uk/1", meta={M.POOL: "mine"})
    assert [pools.key(Request("http://www.shop.co.uk/")) for _ in "ab"] == [
        "pool:shop.co.uk#0",
        "pool:shop.co.uk#1",
    ]
    assert (pools.key(named), named.meta[M.POOL]) == ("pool:mine#0", "mine")
    bad = Request("http://b.example.com/", meta={M.POOL: ["x"]})
    assert pools.key(bad) == "pool:example.com#0" and bad.meta[M.POOL] == "example.com"
    assert pools.key(Request("data:,x")) == "data:,x"  # no host: STICKY_PROXY_KEY's
    pools.flush()
    stats = crawler.stats.get_stats()  # type: ignore[union-attr]
    assert stats["sticky_proxy/invalid_meta/sticky_proxy_pool"] == 1
    assert (stats["sticky_proxy/pool/requests"], stats["sticky_proxy/pool/pools"]) == (
        4,
        3,
    )
    # The member's slot, unless the user chose one; it beats the proxy's.
    mine = {"download_slot": "mine"}
    pools.slot(mine, "pool:a#1")
    proxy = {"download_slot": "1.2.3.4:8000", M.SLOT: "1.2.3.4:8000"}
    pools.slot(proxy, "pool:a#1\x00DE")
    assert mine == {"download_slot": "mine"}
    assert proxy == {
        "download_slot": "sticky_proxy:pool:a#1@DE",
        M.POOL_SLOT: proxy[M.POOL_SLOT],
    }
    again = dict(proxy)
    pools.slot(again, "pool:a#2")  # a copy of a pooled request: ours to set
    assert again["download_slot"] == "sticky_proxy:pool:a#2"
    plain: dict[str, Any] = {}
    pools.slot(plain, "http://a.example/")
    assert plain == {}


# -- crawls ----------------------------------------------------------------------


class Starts:
    """A ban rule that bans nothing and records when each request reached
    the site. The gateway records a request's answer before it writes it
    back: an exit whose next request reaches the site before the gateway's
    record of the one before had two at once."""

    def __init__(self, clock: Callable[[], Any]):
        self.clock = clock
        self.seen: list[tuple[int, str]] = []

    def __call__(self, ip: str, path: str) -> None:
        self.seen.append((self.clock(), ip))

    def peak_in_flight(self, log: list[ProxyRecord]) -> dict[str, int]:
        events = sorted(
            [(tick, 1, ip) for tick, ip in self.seen]
            + [(record.time, -1, record.exit_ip) for record in log]
        )
        now: Counter[str] = Counter()
        peak: Counter[str] = Counter()
        for _, step, ip in events:
            now[ip] += step
            peak[ip] = max(peak[ip], now[ip])
        return dict(peak)


def pool_ids(host: str, generations: int = 3) -> dict[str, tuple[int, int]]:
    """Session id -> (member, generation) of a pool of 8 over *host*."""
    rules = get_preset("sandbox").id_rules
    return {
        session_id(member_key(host, i), gen, rules): (i, gen)
        for i in range(8)
        for gen in range(generations)
    }


@deferred_f_from_coro_f
async def test_1000_pages_of_one_site_leave_through_8_exits_one_request_at_a_time():
    # The sandbox's clock is a counter: the order of arrivals at the site
    # and answers at the gateway is exact, whatever the machine's speed.
    tick = itertools.count().__next__
    slots: dict[str, tuple[int, float]] = {}

    def downloaded(request: Any, spider: Any, **_: Any) -> None:
        name = request.meta["download_slot"]
        slot = spider.crawler.engine.downloader.slots[name]
        slots[name] = (slot.concurrency, slot.delay)

    with Sandbox(clock=tick) as sandbox:
        starts = sandbox.site.ban_rule = Starts(tick)
        result = await crawl(
            hooked(signals.response_downloaded, downloaded),
            settings_for(
                sandbox,
                **POOL,
                CONCURRENT_REQUESTS=32,
                AUTOTHROTTLE_ENABLED=True,
                AUTOTHROTTLE_START_DELAY=0,
                AUTOTHROTTLE_MAX_DELAY=0.05,
            ),
            base=sandbox.site_url,
            n=1000,
            follow=False,
        )
        hits, log = list(sandbox.site.hits), list(sandbox.gateway.log)
    assert len(result.items) == 1000
    ids = pool_ids("127.0.0.1", 1)
    assert {item["session"] for item in result.items} == set(ids)
    assert len({hit.client_ip for hit in hits}) == 8
    assert set(starts.peak_in_flight(log).values()) == {1}
    assert result.stats["sticky_proxy/pool/requests"] == 1000
    assert result.stats["sticky_proxy/pool/pools"] == 1
    assert "sticky_proxy/bans" not in result.stats
    # Eight slots of one request each, whose delay AutoThrottle adjusted
    # (from STICKY_PROXY_SESSION_SLOT_DELAY's least, 0.001).
    assert set(slots) == {slot_name(member_key("127.0.0.1", i)) for i in range(8)}
    assert all(conc == 1 and delay != 0.001 for conc, delay in slots.values()), slots


class BanFirstExits:
    """Bans (403) the first *count* exits the site sees, for good."""

    def __init__(self, count: int):
        self.count = count
        self.banned: set[str] = set()
        self.served: set[str] = set()

    def __call__(self, ip: str, path: str) -> str | None:
        if ip not in self.served and len(self.banned) < self.count:
            self.banned.add(ip)
        if ip in self.banned:
            return "403"
        self.served.add(ip)
        return None


@deferred_f_from_coro_f
async def test_bans_replace_members_and_a_second_crawler_uses_the_same_8_sessions(
    sandbox: Sandbox, redis_db: str
):
    rule = sandbox.site.ban_rule = BanFirstExits(2)
    settings = redis_settings(sandbox, redis_db, **POOL)
    first = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=30)
    ids = pool_ids("127.0.0.1")
    # No item lost; each page's follow-ups (its key) left through its exit.
    assert len(first.items) == 120 and "sticky_proxy/gave_up" not in first.stats
    assert all(len(exits) == 1 for exits in exits_by_item(sandbox, rule).values())
    # Two members burned and replaced by their next generation; a burned
    # generation never comes back once its successor is out: 8 live at a time.
    used = [ids[record.session] for record in sandbox.gateway.log]
    latest: dict[int, int] = {}
    for member, gen in used:
        assert gen >= latest.get(member, 0), (member, gen, latest)
        latest[member] = gen
    assert sorted(Counter(gen for _, gen in set(used)).items()) == [(0, 8), (1, 2)]
    assert len(rule.banned) == 2 and first.stats["sticky_proxy/bans"] >= 2
    live = {sid for sid, (member, gen) in ids.items() if latest.get(member) == gen}
    assert len(live) == 8

    sandbox.reset()  # a second crawler: nothing shared but Redis
    second = await crawl(
        ItemsSpider, settings, base=sandbox.site_url, n=16, follow=False
    )
    assert len(second.items) == 16
    assert {record.session for record in sandbox.gateway.log} == live
    by_exit: defaultdict[str, set[str]] = defaultdict(set)
    for item in second.items:
        by_exit[item["exit"]].add(item["session"])
    assert len(by_exit) == 8 and all(len(s) == 1 for s in by_exit.values())


def test_pool_settings_without_a_pool_span_are_said(caplog: pytest.LogCaptureFixture):
    """A new user set the size and the slots but not STICKY_PROXY_SESSION_POOL
    and got a session per URL, without a word."""
    settings = {
        **BASE_SETTINGS,
        "STICKY_PROXY_URL": URL,
        "STICKY_PROXY_SESSION_POOL_SIZE": 4,
        "STICKY_PROXY_SESSION_SLOTS": True,
    }
    for span, said in ((None, True), ("host", False)):
        caplog.clear()
        _middleware({**settings, "STICKY_PROXY_SESSION_POOL": span})
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        expected = (
            "STICKY_PROXY_SESSION_POOL_SIZE, STICKY_PROXY_SESSION_SLOTS set, but "
            "STICKY_PROXY_SESSION_POOL is None"
        )
        assert any(expected in m for m in warned) is said, warned


@pytest.mark.parametrize(
    ("pools", "pool", "said"),
    [
        (
            {"STICKY_PROXY_SESSION_POOL": "host", "STICKY_PROXY_SESSION_POOL_SIZE": 9},
            None,
            "SIZE)",
        ),
        ({"STICKY_PROXY_SESSION_POOL_SIZES": {"api": 9}}, "api", "SIZES)"),
        (
            {
                "STICKY_PROXY_SESSION_POOL_SIZE": 9,
                "STICKY_PROXY_SESSION_POOL_SIZES": {"api": 9},
            },
            "api",
            "SIZES)",
        ),
        ({"STICKY_PROXY_SESSION_POOL_SIZE": 9}, "listing", "SIZE)"),  # named in meta
        ({"STICKY_PROXY_POOL_MAX_IDLE": 4}, "listing", "SIZE)"),  # the default 8
        (
            {"STICKY_PROXY_SESSION_POOL": "host", "STICKY_PROXY_SESSION_POOL_SIZE": 8},
            None,
            None,
        ),
        ({"STICKY_PROXY_SESSION_POOL_SIZES": {"api": 9}}, "listing", None),
        (
            {"STICKY_PROXY_SESSION_POOL_SIZE": 9, "STICKY_PROXY_POOL_MAX_IDLE": 0},
            "listing",
            None,
        ),
    ],
)
def test_a_pool_larger_than_the_idle_cap_is_said(
    caplog: pytest.LogCaptureFixture,
    pools: dict[str, Any],
    pool: str | None,
    said: str | None,
) -> None:
    """Members take turns: with more of them than idle connections kept,
    those whose turn came back found their connection closed and opened a
    new one (measured: 160 connections for 160 requests, 16 members, a cap
    of 8, 4 requests at once), unsaid. Said once, when the pool is first
    used, with the setting its size came from."""
    settings = {
        **BASE_SETTINGS,
        "STICKY_PROXY_URL": URL,
        "STICKY_PROXY_POOL_MAX_IDLE": 8,
        **pools,
    }
    mw = _middleware(settings)
    meta = {"sticky_proxy_pool": pool} if pool else {}
    for path in ("a", "b", "c"):
        mw.pools.key(Request(f"http://shop.example/{path}", meta=dict(meta)))
    warned = [
        r.getMessage()
        for r in caplog.records
        if "STICKY_PROXY_POOL_MAX_IDLE =" in r.getMessage()
    ]
    if said is None:
        assert warned == []
    else:
        assert len(warned) == 1 and f"(STICKY_PROXY_SESSION_POOL_{said}" in warned[0], (
            warned
        )
        assert warned[0].startswith(f"Session pool '{pool or 'shop.example'}' has ")


def test_the_idle_cap_warning_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """One pool per host, each too large: one warning, not one per host."""
    settings = {
        **BASE_SETTINGS,
        "STICKY_PROXY_URL": URL,
        "STICKY_PROXY_POOL_MAX_IDLE": 8,
        "STICKY_PROXY_SESSION_POOL": "host",
        "STICKY_PROXY_SESSION_POOL_SIZE": 9,
    }
    mw = _middleware(settings)
    for host in ("a.example", "b.example", "c.example"):
        mw.pools.key(Request(f"http://{host}/"))
    assert len(mw.pools.core) == 3
    said = [
        r for r in caplog.records if "STICKY_PROXY_POOL_MAX_IDLE =" in r.getMessage()
    ]
    assert len(said) == 1


def test_a_password_in_a_pool_name_is_redacted_before_it_is_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Names are shortened for the log; shortened first, a password past
    the cut was no longer found whole, and its first characters were logged."""
    settings = {
        **BASE_SETTINGS,
        "STICKY_PROXY_URL": URL,
        "STICKY_PROXY_POOL_MAX_IDLE": 4,
    }
    mw = _middleware(settings)
    name = "x" * 30 + "s3cret-pw"
    for value in (name, [name]):  # a pool larger than the cap; a bad value
        mw.pools.key(Request("http://shop.example/", meta={"sticky_proxy_pool": value}))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("***") == 2 and "s3c" not in text, text


def _middleware(settings: dict[str, Any]) -> StickyProxyMiddleware:
    """The middleware of a crawler with *settings*, outside a crawl."""
    crawler = get_crawler(Spider, settings)
    crawler.spider = Spider("pools")
    return StickyProxyMiddleware(crawler)


@pytest.mark.parametrize(
    "password",
    ["back\\slash-pw", 'it\'s-"quoted"-pw', "tab\there-pw", "new\nline-pw"],
    ids=["backslash", "both-quotes", "tab", "newline"],
)
def test_a_password_escaped_in_a_repr_is_redacted(
    caplog: pytest.LogCaptureFixture, password: str
) -> None:
    """A bad meta value is shown by its repr, which escapes a backslash, a
    quote or a control character: the password as written in the settings
    was not found there, and was logged in its escaped form."""
    url = f"http://user-{{session}}:{quote(password, safe='')}@gw.example:8000"
    settings = {
        **BASE_SETTINGS,
        "STICKY_PROXY_URL": url,
        "STICKY_PROXY_POOL_MAX_IDLE": 4,
    }
    # a pool larger than the cap (said once), then two bad values (one each)
    for value in (password, [password], {"pw": password}):
        meta = {"sticky_proxy_pool": value}
        _middleware(settings).pools.key(Request("http://shop.example/", meta=meta))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("***") == 3, text
    assert "-pw" not in text and "here" not in text and "line" not in text, text
