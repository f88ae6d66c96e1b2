"""The fault and abuse campaign (issue 6): nothing lost, nothing leaked.

"Nothing lost" means every URL ends as an item or a recorded give-up.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy import signals
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy._verdicts import ROUTE_WAITS
from scrapy_sticky_proxy.routing.tolerance import OWN_WAIT_MAX
from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction
from scrapy_sticky_proxy.state.memory import MemoryStore
from scrapy_sticky_proxy.state.store import Rotation

from .conftest import assert_absent, assert_no_leak, crawl
from .spiders import ItemsSpider, at_counts, hooked, item_of
from .test_crawl import settings_for
from .test_example import crawl_example


def nothing_lost(result: Any, n: int, parts: int = 3) -> int:
    """Every item page is an item or a give-up; returns the give-ups."""
    pages = {i["item"] for i in result.items if i["part"] == "page"}
    gave_up = result.stats.get("sticky_proxy/gave_up", 0)
    assert len(pages) + gave_up == n
    return gave_up


@deferred_f_from_coro_f
async def test_gateway_refuses_connections_for_seconds(
    sandbox: Sandbox, log_text: Any
) -> None:
    """Case 1: the crawl waits the outage out with a backoff; no session is
    burned for it and nothing is lost."""

    def outage() -> None:
        sandbox.gateway_refuse()
        # The scenario: the gateway is back 2.5 s later, after two probes
        # (ten seconds, the case as first written, waited 15.5 s for the
        # probe after the fourth step and proved nothing more).
        call_later(2.5, sandbox.gateway_normal)

    Outage = hooked(signals.item_scraped, at_counts({20: outage}))

    result = await crawl(Outage, settings_for(sandbox), base=sandbox.site_url, n=100)
    assert nothing_lost(result, 100) == 0
    assert len(result.items) == 400
    stats = result.stats
    assert stats.get("sticky_proxy/bans", 0) == 0
    assert stats.get("sticky_proxy/rerolls", 0) == 0
    # Held back, not hammering: each of the (at most CONCURRENT_REQUESTS=32)
    # requests in the downloader when it went down fails once as refused,
    # once more if it was cut mid-download and retried, then waits at the
    # gate; only one probe per backoff step (0.5, 1, 2 s) goes out.
    # Retrying without the gate would be thousands in 2.5 seconds.
    assert 1 <= stats["sticky_proxy/outage_retries"] <= 2 * 32 + 10
    text = log_text()
    assert "refuses connections" in text and "answers again after" in text
    assert_no_leak(sandbox.password, result, text, sandbox)


@pytest.mark.parametrize(
    ("mode", "wait_max"), [("echo", None), ("drop", None), ("drop", 0.1)]
)
@deferred_f_from_coro_f
async def test_gateway_failing_every_request_for_seconds(
    sandbox: Sandbox, mode: str, wait_max: float | None, log_text: Any
) -> None:
    """The gateway takes connections but answers garbage (echo) or resets
    them after reading the request (drop), for the crawl's first 2 seconds,
    over plain http (from the start, so that every request meets it; from
    the 20th item, how many were still in flight depended on the machine's
    load, and two sessions failing in a row are no proof).
    Sessions fail one after another with nothing answering between: the
    gateway may be failing, not every exit banned. Each such request goes
    again on its session after 0.5, 1, then 2 s: nothing lost, no session
    burned. Before: each
    error was judged a ban, every re-roll failed at once, and in 1.5 s
    about 200 sessions were burned and 35 of 50 pages given up.
    STICKY_PROXY_RETRY_AFTER_MAX = 0.1 (wait_max) caps tolerated retries,
    not these waits: before, it cut them to 0.1 s, and sessions burned."""
    assert 0.5 * 2 ** (ROUTE_WAITS - 1) == OWN_WAIT_MAX
    fail = getattr(sandbox, f"gateway_{mode}")

    def outage() -> None:
        fail()
        call_later(2.0, sandbox.gateway_normal)

    Outage = hooked(signals.spider_opened, outage)
    extra = {} if wait_max is None else {"STICKY_PROXY_RETRY_AFTER_MAX": wait_max}
    result = await crawl(
        Outage,
        settings_for(sandbox, **extra),
        base=sandbox.site_url,
        n=50,
        follow=False,
    )
    assert nothing_lost(result, 50, parts=0) == 0
    stats = result.stats
    assert stats.get("sticky_proxy/bans", 0) == 0
    assert stats.get("sticky_proxy/rerolls", 0) == 0
    assert stats["sticky_proxy/route_retries"] >= 1
    assert "sticky_proxy/outage_retries" not in stats  # no gate held them
    lines = log_text().splitlines()
    said = [x for x in lines if x.startswith("WARNING") and "no response" in x]
    assert len(said) == 1, said  # once a crawl


@deferred_f_from_coro_f
async def test_gateway_outage_longer_than_the_timeout_is_recorded(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    Outage = hooked(signals.item_scraped, at_counts({5: sandbox.gateway_refuse}))

    gave_up = tmp_path / "gave_up.jsonl"
    result = await crawl(
        Outage,
        settings_for(
            sandbox,
            STICKY_PROXY_OUTAGE_TIMEOUT=1.5,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
            CONCURRENT_REQUESTS=2,
        ),
        base=sandbox.site_url,
        n=30,
        follow=False,
    )
    lost = nothing_lost(result, 30, parts=0)
    assert lost >= 20
    records = [json.loads(line) for line in gave_up.read_text().splitlines()]
    assert len(records) == lost
    assert all(r["reasons"][-1].startswith("unreachable/") for r in records)
    # The gateway never came back: the crawl still ended, by itself.
    assert result.stats["finish_reason"] == "finished"


@deferred_f_from_coro_f
async def test_gateway_that_hangs(sandbox: Sandbox) -> None:
    """Case 2: a gateway that accepts and never answers. Nobody gets an
    answer, so the timeouts are not the exits' fault: no session is burned;
    RetryMiddleware retries each request and then fails it (errback), and
    the crawl finishes."""

    Hang = hooked(signals.item_scraped, at_counts({4: sandbox.gateway_hang}))

    result = await crawl(
        Hang,
        settings_for(
            sandbox,
            DOWNLOAD_TIMEOUT=0.5,
            STICKY_PROXY_MAX_REROLLS=2,
            CONCURRENT_REQUESTS=4,
        ),
        base=sandbox.site_url,
        n=12,
        follow=False,
    )
    stats = result.stats
    pages = {i["item"] for i in result.items}
    # Nothing lost: every page is an item or a request RetryMiddleware failed.
    assert len(pages) + stats["retry/max_reached"] == 12
    assert stats["retry/max_reached"] >= 4
    # Requests in flight when it stopped answering had seen the target answer
    # others while they waited: those may burn their session once each.
    assert stats.get("sticky_proxy/bans", 0) <= 4
    assert stats["sticky_proxy/target_timeouts"] >= 3 * 4
    assert stats.get("sticky_proxy/gave_up", 0) == 0
    assert stats["finish_reason"] == "finished"


def _ban_many(url: str, keys: int, barrier: Any) -> None:
    import asyncio

    from scrapy_sticky_proxy.state.redis_store import RedisStore

    async def run() -> None:
        store = RedisStore(url, "faults", heartbeat_interval=60)
        await store.open()
        barrier.wait()
        for i in range(keys):
            store.ban(f"key{i}", 0, 0.0)
        await store.flushed()
        await store.close()

    asyncio.run(run())


def test_double_bans_from_two_processes(redis_db: str) -> None:
    """Case 6: 1000 keys, each banned at generation 0 by two processes that
    start together: exactly 1000 bumps."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_ban_many, args=(redis_db, 1000, barrier)) for _ in "ab"
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    assert client.get("faults:stats:bumps") == "1000"
    values = {client.get(k) for k in client.scan_iter("faults:g:*")}
    assert values == {"1"}


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_memory_stays_bounded_with_a_million_keys() -> None:
    """Case 10: 1e6 distinct keys through a store capped at 100,000: the
    store holds the cap, and RSS stops growing once the cap is reached."""
    store = MemoryStore(max_keys=100_000, rotation=Rotation(max_uses=10))
    for i in range(200_000):
        store.acquire(f"https://example.com/item/{i}?ref=feed", 0.0)
    at_cap = rss_kib()
    for i in range(200_000, 1_000_000):
        store.acquire(f"https://example.com/item/{i}?ref=feed", 0.0)
    after = rss_kib()
    assert len(store) == 100_000
    assert store.evicted == 900_000
    growth = after - at_cap
    print(f"RSS at cap {at_cap} KiB, after 1e6 keys {after} KiB (+{growth} KiB)")
    assert growth < 20_000  # 800,000 more keys, less than 20 MB more


@deferred_f_from_coro_f
async def test_nothing_in_redis_holds_a_proxy_password(
    redis_db: str, tmp_path: Path
) -> None:
    """Case 11: static proxies with passwords, bans, give-ups, in Redis mode:
    no key or value in Redis holds a password or a base64 credential."""
    import base64

    boxes = [Sandbox(password=f"redis-leak-pw-{i}").start() for i in range(2)]
    try:
        site = boxes[0].site
        # Which exits ban is decided here, not by ban_fraction: exit
        # addresses come from a counter shared by every test in the process,
        # so a fraction could leave both exits unbanned (1 run in 4).
        exits = [box.gateway.exit_for("") for box in boxes]

        def rule(ip: str, path: str) -> str | None:
            item = item_of(path)
            if ip == exits[0] or (
                ip == exits[1] and item is not None and item % 3 == 0
            ):
                return "403"
            return None

        site.ban_rule = rule
        result = await crawl(
            ItemsSpider,
            {
                "STICKY_PROXY_LIST": [box.gateway_url for box in boxes],
                "STICKY_PROXY_BACKEND": "redis",
                "STICKY_PROXY_REDIS_URL": redis_db,
                "STICKY_PROXY_NAMESPACE": "leak",
                "STICKY_PROXY_MAX_REROLLS": 1,
                "STICKY_PROXY_BAN_PATTERNS": ["g-recaptcha"],
            },
            base=boxes[0].site_url,
            n=30,
        )
        assert result.stats.get("sticky_proxy/bans", 0) > 0
        assert result.stats.get("sticky_proxy/gave_up", 0) > 0
    finally:
        for box in boxes:
            box.stop()
    client = redis.Redis.from_url(redis_db)
    dump = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value: Any = b""
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        dump.append(repr((key, value)))
    text = "\n".join(dump)
    assert "leak:proxies" in text and "leak:g:" in text
    for box in boxes:
        assert_absent(box.password, text)
        creds = base64.b64encode(f"{box.username}:{box.password}".encode()).decode()
        assert creds[:16] not in text


@deferred_f_from_coro_f
async def test_namespace_shared_by_two_projects_with_different_providers(
    sandbox: Sandbox, redis_db: str
) -> None:
    """Case 11: one project uses the sandbox preset, another a generic
    {session} template (different id rules) in the same namespace: both
    crawl fine, and each one's bans are honoured by the other."""
    rule = ban_fraction(0.25)
    sandbox.site.ban_rule = rule
    common = {
        "STICKY_PROXY_BACKEND": "redis",
        "STICKY_PROXY_REDIS_URL": redis_db,
        "STICKY_PROXY_NAMESPACE": "shared",
        "STICKY_PROXY_BAN_PATTERNS": ["g-recaptcha"],
    }
    preset = await crawl(
        ItemsSpider,
        {
            **common,
            "STICKY_PROXY_PROVIDER": "sandbox",
            "STICKY_PROXY_URL": sandbox.gateway_url,
        },
        base=sandbox.site_url,
        n=40,
    )
    template_url = sandbox.gateway_url.replace(
        f"{sandbox.username}:", f"{sandbox.username}-sid-{{session}}:"
    )
    generic = await crawl(
        ItemsSpider,
        {
            **common,
            "STICKY_PROXY_PROVIDER": "iproyal",
            "STICKY_PROXY_URL": template_url,
        },
        base=sandbox.site_url,
        n=40,
    )
    for result in (preset, generic):
        assert nothing_lost(result, 40) == 0
        assert len(result.items) == 160
    # The second project started on the generations the first one burned.
    first = {i["item"]: i["generation"] for i in preset.items if i["part"] == "page"}
    second = {i["item"]: i["generation"] for i in generic.items if i["part"] == "page"}
    burned = {item for item, generation in first.items() if generation > 0}
    assert burned
    assert all(second[item] >= first[item] for item in burned)


def test_leak_scan_of_the_example_crawl_output(tmp_path: Path) -> None:
    """Case 9, end to end: the example crawl's whole output (stdout, stderr
    with DEBUG logs, items, give-ups) never holds the sandbox password."""
    items = tmp_path / "items.jsonl"
    proc = crawl_example(
        "-O",
        str(items),
        LOG_LEVEL="DEBUG",
        STICKY_PROXY_GAVE_UP_FILE=tmp_path / "g.jsonl",
        DEMO_BAN_FRACTION=0.5,
        STICKY_PROXY_MAX_REROLLS=1,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr + items.read_text()
    output += (
        (tmp_path / "g.jsonl").read_text() if (tmp_path / "g.jsonl").exists() else ""
    )
    assert_absent("sandbox-secret-pw", output)
    assert "gave_up" in output
