"""Proxy tiers (STICKY_PROXY_TIERS): the pure core with a fake clock, the
settings, the tier per site shared through Redis, and one crawl through two
gateways."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy._stats import Counter
from scrapy_sticky_proxy._tiers import Tiers
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.routing.decisions import Decision, Held
from scrapy_sticky_proxy.routing.tiers import Move, SiteTiers, TierPolicy, tiered_key
from scrapy_sticky_proxy.sandbox import Sandbox
from scrapy_sticky_proxy.sandbox._credentials import decode_basic
from scrapy_sticky_proxy.state import snapshot
from scrapy_sticky_proxy.state.memory import MemoryStore

from .conftest import crawl, records
from .spiders import ItemsSpider, item_of


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(
    tiers: int = 3, window: int = 4, rate: float = 0.5, quiet: float = 60.0, **kw: Any
) -> tuple[SiteTiers, Clock, list[Move]]:
    clock, moves = Clock(), []
    sites = SiteTiers(
        tiers, TierPolicy(window, rate, quiet), clock=clock, on_move=moves.append, **kw
    )
    return sites, clock, moves


# -- the core ------------------------------------------------------------------


def test_a_site_moves_up_at_the_threshold_and_only_its_current_tier_counts() -> None:
    sites, clock, moves = make(window=4, rate=0.5)  # 2 bans of the last 4
    assert sites.tier("a") == 1
    sites.outcome("a", 1, banned=True)
    sites.outcome("a", 1, banned=False)
    assert sites.tier("a") == 1 and not moves
    sites.outcome("a", 1, banned=True)
    assert sites.tier("a") == 2
    assert moves == [Move("a", 1, 2, clock.now)] and moves[0].up
    # In flight when it moved: a ban through tier 1 says nothing of tier 2.
    sites.outcome("a", 1, banned=True)
    sites.outcome("a", 2, banned=True)
    assert sites.tier("a") == 2
    sites.outcome("a", 2, banned=True)
    assert sites.tier("a") == 3
    assert sites.tier("b") == 1  # another site is on its own


def test_old_bans_leave_the_window() -> None:
    sites, _, moves = make(window=4, rate=0.5)
    sites.outcome("a", 1, banned=True)
    for _ in range(4):  # the ban is pushed out by 4 successes
        sites.outcome("a", 1, banned=False)
    sites.outcome("a", 1, banned=True)
    assert sites.tier("a") == 1 and not moves
    sites.outcome("a", 1, banned=True)
    assert sites.tier("a") == 2


def test_the_threshold_rounds_up_and_never_passes_the_top_tier() -> None:
    assert TierPolicy(20, 0.5).threshold == 10
    assert TierPolicy(10, 0.3).threshold == 3
    assert TierPolicy(4, 0.1).threshold == 1
    assert TierPolicy(3, 1.0).threshold == 3
    sites, _, moves = make(tiers=2, window=1, rate=1.0)
    for tier in (1, 2, 2, 2):
        sites.outcome("a", tier, banned=True)
    assert sites.tier("a") == 2 and len(moves) == 1
    with pytest.raises(ValueError):
        TierPolicy(0)


def test_after_the_quiet_period_a_site_tries_the_tier_below() -> None:
    sites, clock, moves = make(window=2, rate=1.0, quiet=60.0)
    for tier in (1, 1, 2, 2):
        sites.outcome("a", tier, banned=True)
    assert sites.tier("a") == 3
    clock.now += 59.9
    assert sites.tier("a") == 3
    clock.now += 0.1
    assert sites.tier("a") == 2  # one tier down, with an empty window
    assert moves[-1] == Move("a", 3, 2, clock.now) and not moves[-1].up
    sites.outcome("a", 2, banned=True)
    assert sites.tier("a") == 2
    sites.outcome("a", 2, banned=True)  # banned there too: back up
    assert sites.tier("a") == 3
    clock.now += 60
    assert sites.tier("a") == 2
    clock.now += 60
    assert sites.tier("a") == 1
    clock.now += 600
    assert sites.tier("a") == 1  # never below tier 1
    assert [m.tier for m in moves] == [2, 3, 2, 3, 2, 1]


def test_moves_from_other_processes_the_newest_wins() -> None:
    sites, clock, moves = make()
    assert sites.learn("a", 2, clock.now - 10)
    assert sites.tier("a") == 2 and not moves  # learned moves are not re-shared
    assert not sites.learn("a", 1, clock.now - 20)  # older than what we know
    assert sites.tier("a") == 2
    assert sites.learn("a", 99, clock.now - 5)  # clamped to the top tier
    assert sites.tier("a") == 3
    assert not sites.learn("b", 1, clock.now)  # tier 1 is what nobody knows
    assert len(sites) == 1


def test_the_map_of_sites_is_bounded() -> None:
    sites, _, _ = make(max_sites=3)
    for site in "abcd":
        sites.outcome(site, 1, banned=True)
    assert len(sites) == 3
    sites.outcome("b", 1, banned=True)  # b: 2 bans -> tier 2; a was forgotten
    assert sites.tier("b") == 2
    for site in "ab":  # a success of a site never banned stores nothing
        sites.outcome(f"ok-{site}", 1, banned=False)
    assert len(sites) == 3


def test_each_tier_has_its_own_sessions() -> None:
    assert tiered_key("k", 1) == "k"
    assert len({tiered_key("k", n) for n in (1, 2, 3)}) == 3


# -- settings --------------------------------------------------------------------

GW1 = "http://user-{session}:first-pw-1@127.0.0.1:8001"
GW2 = "http://user-{session}:second-pw-2@127.0.0.1:8002"


def parse(**values: Any) -> StickyProxyConfig:
    return StickyProxyConfig.from_settings(Settings(values))


def test_tiers_parse_with_their_providers_and_secrets() -> None:
    config = parse(
        STICKY_PROXY_TIERS=json.dumps(
            [{"url": GW1}, {"list": ["http://u:third-pw-3@127.0.0.1:8003"]}]
        ),
        STICKY_PROXY_PROVIDER="generic",
        STICKY_PROXY_TIER_WINDOW="4",
        STICKY_PROXY_TIER_BAN_RATE="0.25",
    )
    # A route id names its tier: "#t<n>" above tier 1.
    routes = [t.routes for t in config.tiers]
    assert routes == [["127.0.0.1:8001"], ["127.0.0.1:8003#t2"]]
    assert config.gateway is config.tiers[0].gateway  # tier 1 is "the" route
    assert config.tier_policy == TierPolicy(4, 0.25, 600.0)
    assert {"first-pw-1", "third-pw-3"} <= set(config.secrets)
    assert parse(STICKY_PROXY_URL=GW1).tiers == ()  # one tier, as before
    iproyal = parse(
        STICKY_PROXY_TIERS=[{"url": GW1}, {"url": GW2, "provider": "iproyal"}]
    )
    assert [t.provider.name for t in iproyal.tiers] == ["generic", "iproyal"]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"STICKY_PROXY_URL": GW2}, "STICKY_PROXY_URL"),
        ({"STICKY_PROXY_LIST": [GW2]}, "STICKY_PROXY_LIST"),
        ({"STICKY_PROXY_TIERS": [{"url": GW1, "list": [GW2]}]}, "tier 1"),
        ({"STICKY_PROXY_TIERS": [{"url": GW1}, {"url": GW2, "x": 1}]}, "tier 2"),
        ({"STICKY_PROXY_TIERS": [{"url": "ftp://h:1"}]}, "tier 1"),
        ({"STICKY_PROXY_TIERS": [{"url": GW1, "provider": "nope"}]}, "nope"),
        ({"STICKY_PROXY_TIERS": "[{"}, "JSON"),
        ({"STICKY_PROXY_TIER_BAN_RATE": 0}, "STICKY_PROXY_TIER_BAN_RATE"),
        ({"STICKY_PROXY_TIER_BAN_RATE": "nan"}, "STICKY_PROXY_TIER_BAN_RATE"),
        ({"STICKY_PROXY_TIER_WINDOW": 0}, "STICKY_PROXY_TIER_WINDOW"),
        ({"STICKY_PROXY_TIER_QUIET": -1}, "STICKY_PROXY_TIER_QUIET"),
    ],
)
def test_bad_tier_settings_are_refused(values: dict[str, Any], says: str) -> None:
    values = {"STICKY_PROXY_TIERS": [{"url": GW1}], **values}
    with pytest.raises(ConfigError) as info:
        parse(**values)
    message = str(info.value)
    assert message.startswith(("STICKY_PROXY_TIERS", "STICKY_PROXY_TIER_"))
    assert says in message
    assert "pw-" not in message


# -- tiers through one gateway ----------------------------------------------------

ZONE = "http://brd-customer-c1-zone-{zone}:{pw}@{hostport}"


def zones(*names: str, pw: str = "zone-secret-pw", hostport: str = "127.0.0.1:8001"):
    """Bright Data's zones (SOAX's packages, NetNut's products alike): one
    gateway, one password, the zone in the username."""
    return [
        {"url": ZONE.format(zone=z, pw=pw, hostport=hostport), "provider": "brightdata"}
        for z in names
    ]


def test_tiers_through_one_gateway_have_their_own_routes_and_gates() -> None:
    config = parse(
        STICKY_PROXY_TIERS=zones("dc", "res"), STICKY_PROXY_UNREACHABLE_TIMEOUT=5
    )
    routes = [t.routes for t in config.tiers]
    assert routes == [["127.0.0.1:8001"], ["127.0.0.1:8001#t2"]]
    clock = Clock()
    count = Counter(get_crawler().stats)
    tiers = Tiers(config, MemoryStore(), lambda route: None, count)
    first, second = tiers.router.routers
    first.clock = second.clock = clock
    sent: list[dict[str, Any]] = [{}, {}]  # each first request's meta (a probe)
    one = first.admit(first.session("k"), sent[0])
    two = second.admit(second.session(tiered_key("k", 2)), sent[1])
    assert isinstance(one, Decision) and isinstance(two, Decision)
    assert (one.route, two.route) == ("127.0.0.1:8001", "127.0.0.1:8001#t2")
    assert one.proxy == two.proxy == "http://127.0.0.1:8001"  # meta["proxy"]
    users = {}
    for step in (one, two):
        assert tiers.router.knows(step.route)
        header = tiers.router.authorization(step.route, step.session, "latin-1")
        assert header is not None
        users[tiers.router.tier_of(step.route)] = decode_basic(header.decode())
    assert users == {
        1: (f"brd-customer-c1-zone-dc-session-{one.session}", "zone-secret-pw"),
        2: (f"brd-customer-c1-zone-res-session-{two.session}", "zone-secret-pw"),
    }
    assert tiers.source(two.route) == "tier 2 of STICKY_PROXY_TIERS"  # for a 407
    # One gate per tier's route: tier 2 refusing holds tier 2 only (its
    # zone may be the one disabled; a gateway down is learnt by each tier).
    tiers.router.answered(one.route, sent[0])
    tiers.router.refused(two.route, sent[1])
    assert second.gate(two.route).down and not first.gate(one.route).down
    clock.now += 5.1
    assert isinstance(first.admit(first.session("k2"), {}), Decision)
    with pytest.raises(Held):  # never answered: a configuration mistake
        second.admit(second.session(tiered_key("k2", 2)), {})


@pytest.mark.parametrize(
    ("second", "says"),
    [
        ({"url": GW2}, "the gateway 127.0.0.1:8002 (tier 2 of STICKY_PROXY_TIERS)"),
        (
            {"list": ["http://u:third-pw-3@127.0.0.1:8003"]},
            "no proxy of tier 2 of STICKY_PROXY_TIERS (127.0.0.1:8003#t2)",
        ),
    ],
)
def test_a_tier_that_never_answers_is_named_as_a_tier(
    second: dict[str, Any], says: str
) -> None:
    config = parse(
        STICKY_PROXY_TIERS=[{"url": GW1}, second], STICKY_PROXY_UNREACHABLE_TIMEOUT=5
    )
    count = Counter(get_crawler().stats)
    router = Tiers(config, MemoryStore(), lambda route: None, count).router.routers[1]
    router.clock = clock = Clock()
    sent: dict[str, Any] = {}
    step = router.admit(router.session("k"), sent)
    assert isinstance(step, Decision)
    router.refused(step.route, sent)
    clock.now += 5.1
    with pytest.raises(Held) as held:
        router.admit(router.session("k"), {})
    assert held.value.close is not None
    message = held.value.close[1]
    assert message.startswith(says), message
    assert "STICKY_PROXY_URL" not in message and "STICKY_PROXY_LIST" not in message
    assert "-pw-" not in message


# -- shared through Redis ----------------------------------------------------------


@deferred_f_from_coro_f
async def test_a_move_reaches_another_process_and_bad_values_are_skipped(
    redis_db: str,
) -> None:
    import redis

    from scrapy_sticky_proxy.state.redis_store import RedisStore

    client = redis.Redis.from_url(redis_db, decode_responses=True)
    now = time.time()
    client.hset(
        "t:tiers",
        mapping={
            "old.example": json.dumps([3, now - 5]),
            "nan.example": "[2, NaN]",
            "big.example": "[1e400, 0]",
            "far.example": json.dumps([2, now + 86400]),
            "a space": "[2, 0]",
        },
    )
    first, second = RedisStore(redis_db, "t"), RedisStore(redis_db, "t")
    mine = SiteTiers(3, TierPolicy(window=2, ban_rate=1.0), on_move=lambda m: (
        first.tier_changed(m.site, m.tier, m.since)
    ))  # fmt: skip
    theirs = SiteTiers(3, TierPolicy())
    second.on_tier_update = theirs.learn  # type: ignore[assignment]

    async def seen(check: Any) -> None:
        async with second._changed:
            await asyncio.wait_for(second._changed.wait_for(check), 5)

    await asyncio.wait_for(first.open(), 5)
    await asyncio.wait_for(second.open(), 5)
    try:
        assert theirs.tier("old.example") == 3  # loaded at start
        assert second.skips.counts["tier"] == 4
        # Published before the good move: read before it, and skipped.
        client.publish("t:events", "t shop.example [16, 1e999]")
        mine.outcome("shop.example", 1, banned=True)
        mine.outcome("shop.example", 1, banned=True)
        assert mine.tier("shop.example") == 2
        await seen(lambda: theirs.tier("shop.example") == 2)
        assert second.skips.counts["tier"] == 5
    finally:
        await first.close()
        await second.close()
    stored = json.loads(client.hget("t:tiers", "shop.example") or "")
    assert stored[0] == 2 and 0 < client.ttl("t:tiers") <= 86400


# -- a crawl through two gateways -------------------------------------------------


class TwoHostsSpider(Spider):
    """Items 0..n-1 from 127.0.0.1 (host A) and 100.. from localhost (B):
    both are the demo site, two sites to the middleware."""

    name = "two_hosts"

    def __init__(self, port: int, n: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.port, self.n = port, n

    async def start(self) -> AsyncIterator[Any]:
        for i in range(self.n):
            yield Request(f"http://127.0.0.1:{self.port}/item/{i}")
            yield Request(f"http://localhost:{self.port}/item/{100 + i}")

    def parse(self, response: Any) -> Iterator[dict[str, Any]]:
        yield {
            "host": response.url.split("/")[2].split(":")[0],
            "exit": response.css("#client::text").get(),
            "tier": response.meta["sticky_proxy_tier"],
            "jar": response.meta.get("cookiejar"),
            "item": item_of("/" + response.url.split("/", 3)[3]),
        }


HOSTS = [("127.0.0.1", 2, 0), ("localhost", 1, 100)]  # (host, its tier, items)


@pytest.fixture
def second_gateway() -> Iterator[Sandbox]:
    with Sandbox(password="tier-two-secret") as box:
        yield box


@pytest.mark.parametrize("tolerance", [1, 3])
@deferred_f_from_coro_f
async def test_a_banning_site_climbs_to_tier_two_and_the_other_stays(
    sandbox: Sandbox, second_gateway: Sandbox, log_text: Any, tolerance: int
) -> None:
    """With a tolerance, a verdict its session survives is one ban all the
    same: the site climbs as soon (2 verdicts), every one of them tolerated."""
    first = sandbox.gateway  # exits are process-wide: each gateway has its own

    def rule(ip: str, path: str) -> str | None:
        item = item_of(path)
        banned = item is not None and item < 100 and ip in first.sessions().values()
        return "403" if banned else None  # host A's pages, through gateway 1

    sandbox.site.ban_rule = rule
    n, window, rate = 4, 4, 0.5
    settings = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_TIERS": [
            {"url": sandbox.gateway_url},
            {"url": second_gateway.gateway_url},
        ],
        "STICKY_PROXY_TIER_WINDOW": window,
        "STICKY_PROXY_TIER_BAN_RATE": rate,
        "CONCURRENT_REQUESTS": 1,  # bans seen one at a time: an exact count
        "STICKY_PROXY_BAN_TOLERANCE": tolerance,
        "STICKY_PROXY_TOLERANCE_BACKOFF": 0.01,
    }
    result = await crawl(TwoHostsSpider, settings, port=sandbox.site_port, n=n)
    tiers = {(i["host"], i["tier"]) for i in result.items}
    assert len(result.items) == 2 * n
    assert tiers == {("127.0.0.1", 2), ("localhost", 1)}
    stats = result.stats
    threshold = math.ceil(rate * window)
    assert stats["sticky_proxy/tier/1/bans"] == stats["sticky_proxy/bans"]
    assert stats["sticky_proxy/bans"] == threshold
    assert stats.get("sticky_proxy/tolerated", 0) == (threshold if tolerance > 1 else 0)
    assert stats["sticky_proxy/tier/escalations"] == 1
    assert "sticky_proxy/tier/2/bans" not in stats
    # Host A: its first requests, banned on tier 1, then every item on tier 2.
    assert stats["sticky_proxy/tier/1/requests"] == n + threshold
    assert stats["sticky_proxy/tier/2/requests"] == n
    exits = {i["host"]: set() for i in result.items}
    for item in result.items:
        exits[item["host"]].add(item["exit"])
    second = set(second_gateway.gateway.sessions().values())
    assert exits["127.0.0.1"] <= second
    assert not exits["localhost"] & second
    assert "moves from proxy tier 1 to 2" in log_text()


@deferred_f_from_coro_f
async def test_three_zones_of_one_gateway_a_banned_site_climbs_with_its_username(
    log_text: Any,
) -> None:
    """The issue's shape: three tiers through one gateway, differing only in
    the zone in the username. Host A bans the first zone's exits: it climbs
    to the second, whose requests carry the second zone's username (the
    gateway records the username it saw), with nothing lost."""
    password = "one-gateway-zone-pw"
    with Sandbox(accept_any_credentials=True, password=password) as box:
        gateway = box.gateway  # with any credentials: a session is a username

        def rule(ip: str, path: str) -> str | None:
            item = item_of(path)
            dc = {ip for user, ip in gateway.sessions().items() if "-zone-dc-" in user}
            return "403" if item is not None and item < 100 and ip in dc else None

        box.site.ban_rule = rule
        n = 4
        settings = {
            "STICKY_PROXY_TIERS": zones(
                "dc", "res", "mob", pw=password, hostport=box.gateway_hostport
            ),
            "STICKY_PROXY_TIER_WINDOW": 4,
            "STICKY_PROXY_TIER_BAN_RATE": 0.5,
            "CONCURRENT_REQUESTS": 1,
        }
        result = await crawl(TwoHostsSpider, settings, port=box.site_port, n=n)
        log = list(gateway.log)
    stats = result.stats
    assert len(result.items) == 2 * n and "sticky_proxy/gave_up" not in stats
    assert stats["sticky_proxy/tier/escalations"] == 1
    zone = {r.exit_ip: r.session.split("-zone-")[1].split("-")[0] for r in log}
    got = {(i["host"], i["tier"], zone[i["exit"]]) for i in result.items}
    assert got == {("127.0.0.1", 2, "res"), ("localhost", 1, "dc")}
    # Each tier's route, and so its cookie jars, are its own.
    jars = {(i["tier"], i["jar"].split("/")[1]) for i in result.items}
    assert jars == {(1, box.gateway_hostport), (2, f"{box.gateway_hostport}#t2")}
    sent = {(r.target.split("/")[2].split(":")[0], zone[r.exit_ip]) for r in log}
    assert sent == {("127.0.0.1", "dc"), ("127.0.0.1", "res"), ("localhost", "dc")}
    assert "moves from proxy tier 1 to 2" in log_text()


@pytest.mark.parametrize(
    ("rerolls", "both_blocked", "attempts"),
    [(5, False, (5, 1)), (4, False, (5, 1)), (4, True, (5, 4))],
    ids=["defaults", "its-last-ban-moves-it", "bounded"],
)
@deferred_f_from_coro_f
async def test_one_start_page_on_a_blocked_tier_moves_its_site(
    sandbox: Sandbox,
    second_gateway: Sandbox,
    tmp_path: Path,
    rerolls: int,
    both_blocked: bool,
    attempts: tuple[int, int],
) -> None:
    """A crawl from ONE page, every exit of tier 1 banned, the tier settings
    left alone. Before: the window's threshold (10 bans) was out of reach of
    one request's 6 attempts: it gave up, 0 items, no word about tiers. Now
    its own bans move its site (5 of 10), and a request that ran out of
    re-rolls on a tier its site has just left gets its re-rolls again on the
    new one (bounded: never more than once per tier)."""
    first = sandbox.gateway
    sandbox.site.ban_rule = lambda ip, path: (
        "403" if both_blocked or ip in first.sessions().values() else None
    )
    gave_up = tmp_path / "gave_up.jsonl"
    settings = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_TIERS": [
            {"url": sandbox.gateway_url},
            {"url": second_gateway.gateway_url},
        ],
        "STICKY_PROXY_MAX_REROLLS": rerolls,
        "STICKY_PROXY_GAVE_UP_FILE": str(gave_up),
    }
    result = await crawl(
        ItemsSpider, settings, base=sandbox.site_url, n=1, follow=False
    )
    stats = result.stats
    assert stats["sticky_proxy/tier/escalations"] == 1
    sent = (
        stats["sticky_proxy/tier/1/requests"],
        stats["sticky_proxy/tier/2/requests"],
    )
    assert sent == attempts
    if both_blocked:
        assert result.items == []
        assert [len(r["reasons"]) for r in records(gave_up)] == [sum(attempts)]
    else:
        assert len(result.items) == 1 and "sticky_proxy/gave_up" not in stats


@pytest.mark.parametrize(
    ("values", "warned"),
    [
        ({}, False),
        ({"STICKY_PROXY_TIER_WINDOW": 12}, False),  # 6 bans: its last attempt
        ({"STICKY_PROXY_TIER_WINDOW": 20}, True),
        ({"STICKY_PROXY_MAX_REROLLS": 2}, True),
        ({"STICKY_PROXY_TIER_BAN_RATE": 0.9}, True),
    ],
)
def test_a_window_one_request_cannot_fill_is_said_at_start(
    caplog: pytest.LogCaptureFixture, values: dict[str, Any], warned: bool
) -> None:
    config = parse(STICKY_PROXY_TIERS=[{"url": GW1}, {"url": GW2}], **values)
    with caplog.at_level(logging.WARNING):
        Tiers(config, MemoryStore(), lambda route: None, Counter(get_crawler().stats))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(said) == warned, said
    if warned:
        for name in ("_TIER_WINDOW", "_TIER_BAN_RATE", "_MAX_REROLLS"):
            assert f"STICKY_PROXY{name}" in said[0]


# -- JOBDIR ----------------------------------------------------------------------


def test_the_tiers_in_a_jobdir_snapshot_are_checked(tmp_path: Path) -> None:
    sites, clock, _ = make(window=1, rate=1.0)
    sites.outcome("shop.example", 1, banned=True)
    sites.outcome("ok.example", 1, banned=False)
    assert sites.export() == [("shop.example", 2, clock.now)]  # above tier 1 only
    path = tmp_path / snapshot.FILENAME
    snapshot.save(str(path), [], "s", clock.now, [*sites.export(), ("a b", 2, 0.0)])
    again, _, _ = make()
    for move in snapshot_of(path, clock.now + 5).tiers:
        again.learn(*move)
    assert again.tier("shop.example") == 2
    hostile = {
        "good.example": [3, clock.now - 1],
        "a space": [2, 0],
        "nan.example": [2, math.nan],
        "big.example": [17, 0],
        "future.example": [2, clock.now + 86400],
        "text.example": "[2, 0]",
        "x" * 256: [2, 0],
    }
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "tiers": hostile}))
    loaded = snapshot_of(path, clock.now)
    assert loaded.tiers == [("good.example", 3, clock.now - 1)]
    assert loaded.skipped == len(hostile) - 1
    path.write_text(json.dumps({**document, "tiers": [["shop.example", 2, 0]]}))
    assert (loaded := snapshot_of(path, clock.now)).tiers == [] and loaded.skipped == 1


def snapshot_of(path: Path, now: float) -> snapshot.Loaded:
    loaded = snapshot.load(str(path), "s", 10, now)
    assert loaded is not None and loaded.problem is None
    return loaded


@deferred_f_from_coro_f
async def test_the_tier_of_a_site_survives_a_jobdir_pause(
    sandbox: Sandbox, second_gateway: Sandbox, tmp_path: Path
) -> None:
    first = sandbox.gateway

    def rule(ip: str, path: str) -> str | None:
        item = item_of(path)
        banned = item is not None and item < 100 and ip in first.sessions().values()
        return "403" if banned else None

    sandbox.site.ban_rule = rule
    settings = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_TIERS": [
            {"url": sandbox.gateway_url},
            {"url": second_gateway.gateway_url},
        ],
        "STICKY_PROXY_TIER_WINDOW": 2,
        "STICKY_PROXY_TIER_BAN_RATE": 1.0,
        "CONCURRENT_REQUESTS": 1,
        "JOBDIR": str(tmp_path / "job"),
    }
    port = sandbox.site_port
    paused = await crawl(TwoHostsSpider, settings, port=port, n=2)
    assert paused.stats["sticky_proxy/tier/escalations"] == 1
    # Resumed: items 0 and 1 were seen; 2 and 3 are new.
    resumed = await crawl(TwoHostsSpider, settings, port=port, n=4)
    stats = resumed.stats
    assert stats["sticky_proxy/jobdir/restored_tiers"] == 1
    assert "sticky_proxy/bans" not in stats  # no ban taken again on tier 1
    tiers = {(i["host"], i["item"], i["tier"]) for i in resumed.items}
    assert tiers == {(h, n, t) for h, t, b in HOSTS for n in (b + 2, b + 3)}
