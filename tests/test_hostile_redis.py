"""Issue 11, part 2: whatever another party writes to the Redis namespace
(a buggy crawler, a stale deploy, an attacker on a shared Redis) cannot stop
or steer a crawl. Every value read from Redis or pub/sub is checked; a bad
one is skipped, counted in ``sticky_proxy/redis/skipped`` and warned about
once per kind; the status command prints it safely; the queue serializer
imports no class it was not told to."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy import StickyProxyMiddleware, serializer
from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.pool import ProxyPool
from scrapy_sticky_proxy.routing.providers import PRESETS
from scrapy_sticky_proxy.sandbox import Sandbox, ban_all
from scrapy_sticky_proxy.state.redis_layout import key_digest
from scrapy_sticky_proxy.state.redis_store import RedisStore

from .conftest import crawl
from .spiders import ItemsSpider
from .test_redis_crawl import redis_settings
from .test_redis_store import NS, opened, sync_client, within

HUGE = "1" + "0" * 25  # the pub/sub value of the issue
MAX_GENERATION = 2**31 - 1  # the documented cap
ANSI = "\x1b[31mred\x1b[0m\nfake line\r"
BIG_INT = "1" + "0" * 400  # JSON's integer, past a float: OverflowError once


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def skipped(store: RedisStore) -> dict[str, int]:
    return {k: v for k, v in store.counters().items() if k.startswith("redis/skip")}


# -- values read when the store loads, and by lookups ------------------------


BAD_GENERATIONS = ["abc", "1e5", "-1", " 5", "0x10", HUGE, str(MAX_GENERATION + 1)]


@deferred_f_from_coro_f
async def test_bad_generations_are_skipped_counted_and_warned_once(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad strings, wrong types and names that are not digests under ns:g:
    are skipped at load: the store opens, the local view holds only the good
    key, one warning for the kind, and the stat counts each."""
    client = sync_client(redis_db)
    for i, value in enumerate(BAD_GENERATIONS):
        client.set(f"{NS}:g:{key_digest(f'bad{i}')}", value)
    client.hset(f"{NS}:g:{key_digest('hash')}", "a", "1")
    client.rpush(f"{NS}:g:{key_digest('list')}", "1")
    # Names that are not digests: eviction from a small local view used to
    # feed them to the evicted filter, which parses them as hex.
    for name in ("zz", ANSI, "x" * 5000):
        client.set(f"{NS}:g:{name}", "3")
    client.set(f"{NS}:g:{key_digest('good')}", "2")
    async with opened(redis_db, max_keys=1) as store:
        assert store.generation("good") == 2
        assert len(store) == 1
        for i in range(len(BAD_GENERATIONS)):
            assert store.generation(f"bad{i}") == 0
        counts = skipped(store)
    bad = len(BAD_GENERATIONS) + 2 + 3
    assert counts == {"redis/skipped": bad, "redis/skipped/generation": bad}, counts
    [warning] = [w for w in warnings(caplog) if "skipped" in w.lower()]
    assert f"{NS}:g:" in warning
    assert "\x1b" not in warning and "\n" not in warning and len(warning) < 600


@deferred_f_from_coro_f
async def test_a_lookup_of_an_evicted_key_skips_a_bad_value(redis_db: str) -> None:
    client = sync_client(redis_db)
    async with opened(redis_db, max_keys=2) as store:
        for i in range(6):
            store.ban(f"k{i}", 0, 0.0)
        await within(store.flushed())
        client.set(f"{NS}:g:{key_digest('k0')}", HUGE)
        client.delete(f"{NS}:g:{key_digest('k1')}")
        client.hset(f"{NS}:g:{key_digest('k1')}", "a", "1")
        for key in ("k0", "k1"):
            pending = store.lookup(key)
            assert pending is not None
            await within(pending)
            # Known locally now: no lookup on every request of the key.
            assert store.lookup(key) is None
            assert store.generation(key) <= 1
        assert skipped(store)["redis/skipped/generation"] == 2


# -- pub/sub -----------------------------------------------------------------


@deferred_f_from_coro_f
async def test_hostile_messages_are_skipped_and_the_listener_keeps_listening(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = sync_client(redis_db)
    digest = key_digest("k")
    messages = [
        f"g {digest} {HUGE}",
        f"g {digest} {MAX_GENERATION + 1}",
        f"g {digest} -3",
        f"g {digest}",
        "g zz 5",
        f"g {ANSI} 5",
        "p p1 [1e400, 0, true]",
        "p p1 [0, NaN, true]",
        "p p1 [0, 1e300, true]",
        f"p p1 [3, {BIG_INT}, true]",
        'p p1 {"a": 1}',
        "p p1 [-5, null, true]",
        "who knows" + "x" * 10_000,
    ]
    pool = ProxyPool(["p1", "p2"])
    async with opened(redis_db) as store:
        store.on_proxy_update = pool.restore
        for message in messages:
            client.publish(f"{NS}:events", message)
        # A good message after them: once it is applied, all were read.
        client.publish(f"{NS}:events", f"g {key_digest('after')} 1")
        await within(store.wait_generation("after", 1))
        assert store.generation("k") == 0
        assert pool.export("p1") == (0, None, False)
        # The listener is still there.
        client.publish(f"{NS}:events", f"g {key_digest('later')} 2")
        await within(store.wait_generation("later", 2))
        counts = skipped(store)
    assert counts == {
        "redis/skipped": len(messages),
        "redis/skipped/event": len(messages),
    }, counts
    assert len([w for w in warnings(caplog) if "skipped" in w.lower()]) == 1


@deferred_f_from_coro_f
async def test_bad_proxy_health_in_the_hash_does_not_stop_the_store(
    redis_db: str,
) -> None:
    client = sync_client(redis_db)
    client.hset(
        f"{NS}:proxies",
        mapping={
            "p1": "[1e400, 0, true]",
            "p2": "[3, NaN, false]",
            "p3": "[2, null, true]",
            "p4": f"[3, {BIG_INT}, true]",
        },
    )
    pool = ProxyPool(["p1", "p2", "p3", "p4"])
    store = RedisStore(redis_db, NS)
    store.on_proxy_update = pool.restore
    await within(store.open())
    try:
        assert pool.export("p3") == (2, None, True)
        assert pool.export("p1") == (0, None, False)
        assert pool.export("p4") == (0, None, False)
        assert skipped(store) == {"redis/skipped": 3, "redis/skipped/proxy": 3}
    finally:
        await store.close()


# -- the bump script -----------------------------------------------------------


@deferred_f_from_coro_f
async def test_the_bump_script_neither_adopts_nor_propagates_a_bad_value(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored value that is not a generation (or is at the cap) is a
    conflict: the script leaves it, publishes nothing, and the crawler keeps
    its own view instead of adopting 100000 (or writing 1e+25)."""
    client = sync_client(redis_db)
    async with opened(redis_db, heartbeat_interval=60) as a:
        for key, value in (("e", "1e5"), ("x", "0x10"), ("cap", str(MAX_GENERATION))):
            client.set(f"{NS}:g:{key_digest(key)}", value)
        pubsub = client.pubsub()
        pubsub.subscribe(f"{NS}:events")
        assert a.ban("e", 0, 0.0) == 1
        assert a.ban("x", 0, 0.0) == 1
        a.local.set_generation(key_digest("cap"), MAX_GENERATION, 0.0)
        a.ban("cap", MAX_GENERATION, 0.0)
        a.ban("fine", 0, 0.0)
        await within(a.flushed())
        assert a.generation("e") == 1 and a.generation("x") == 1
        assert client.get(f"{NS}:g:{key_digest('e')}") == "1e5"
        assert client.get(f"{NS}:g:{key_digest('x')}") == "0x10"
        assert client.get(f"{NS}:g:{key_digest('cap')}") == str(MAX_GENERATION)
        assert client.get(f"{NS}:g:{key_digest('fine')}") == "1"
        published = []
        while (message := pubsub.get_message(timeout=0.2)) is not None:
            if message["type"] == "message":
                published.append(message["data"])
        assert published == [f"g {key_digest('fine')} 1"]
        counts = skipped(a)
        assert counts == {"redis/skipped": 3, "redis/skipped/bump": 3}, counts
        assert a.counters()["redis/dropped_changes"] == 0
    assert len([w for w in warnings(caplog) if "skipped" in w.lower()]) == 1


@deferred_f_from_coro_f
async def test_a_wrong_typed_bump_counter_does_not_stop_bumps(redis_db: str) -> None:
    client = sync_client(redis_db)
    client.rpush(f"{NS}:stats:bumps", "x")
    async with opened(redis_db, heartbeat_interval=60) as a, opened(redis_db) as b:
        a.ban("k", 0, 0.0)
        await within(a.flushed())
        await within(b.wait_generation("k", 1))
        assert a.counters()["redis/dropped_changes"] == 0
    assert client.get(f"{NS}:g:{key_digest('k')}") == "1"


# -- the status command ----------------------------------------------------------


def seed_hostile_status(client: Any, ns: str) -> None:
    beats: list[Any] = [
        {"spider": ANSI, "host": "h\n2", "pid": 1, "start": float("nan")},
        {"spider": "inf", "host": "h", "pid": 2, "start": float("inf")},
        {"spider": "x" * 3000, "host": {"a": 1}, "pid": [1], "start": "x"},
        {"spider": "big", "host": "h", "pid": 10**400, "start": 10**400},
        ["not", "a", "dict"],
        "1e400",
    ]
    for i, beat in enumerate(beats):
        raw = beat if isinstance(beat, str) else json.dumps(beat)
        client.set(f"{ns}:crawlers:h:{i}:s", raw.replace("Infinity", "1e400"))
    client.hset(f"{ns}:crawlers:h:99:s", "a", "b")  # wrong type
    client.set(f"{ns}:g:{key_digest('a')}", HUGE)
    client.set(f"{ns}:g:{key_digest('b')}", "NaN")
    client.set(f"{ns}:g:{key_digest('c')}", "2")
    client.set(f"{ns}:stats:bumps", "1e400")
    client.hset(
        f"{ns}:proxies",
        mapping={
            "10.0.0.1:80": "[1e400, 0, true]",
            "10.0.0.2:80": "[3, NaN, true]",
            ANSI: "[0, null, true]",
            "10.0.0.3:80": "[1, null, true]",
            "10.0.0.4:80": f"[3, {BIG_INT}, true]",
        },
    )
    client.rpush(f"{ns}:gave_up", "not json", json.dumps({"url": ANSI}))


SCRAPY = (sys.executable, "-m", "scrapy", "sticky_proxy")


def run_requeue(cwd: Path, url: str) -> subprocess.CompletedProcess[str]:
    return run_status(cwd, url, "--start-urls-key", "s:k", command="requeue")


def run_status(
    cwd: Path, url: str, *extra: str, command: str = "status"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCRAPY, command, "--redis-url", url, *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_status_prints_hostile_values_safely(redis_db: str, tmp_path: Path) -> None:
    client = sync_client(redis_db)
    seed_hostile_status(client, "sticky_proxy")
    text = run_status(tmp_path, redis_db)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "Traceback" not in text.stderr
    assert "\x1b" not in text.stdout and "\r" not in text.stdout
    assert not [line for line in text.stdout.splitlines() if "fake" in line[:6]]
    assert max(map(len, text.stdout.splitlines())) < 400
    assert "Burned keys: 1 (by generation 1: 0, 2: 1, 3: 0, 4+: 0)" in text.stdout
    assert "Generation bumps: 0" in text.stdout
    raw = run_status(tmp_path, redis_db, "--json")
    assert raw.returncode == 0, raw.stderr[-2000:]
    # Strict JSON: no NaN or Infinity in it.
    status = json.loads(raw.stdout, parse_constant=pytest.fail)
    assert status["burned_keys"] == 1 and status["bumps"] == 0
    assert status["gave_up"] == 2
    ids = [p["id"] for p in status["proxies"]]
    assert len(ids) == 2 and "10.0.0.3:80" in ids
    assert not [i for i in ids if "\x1b" in i or "\n" in i]
    assert len(status["crawlers"]) == 4
    for crawler in status["crawlers"]:
        assert crawler["uptime"] is None or isinstance(crawler["uptime"], float)
        assert all(len(str(v)) <= 200 for v in crawler.values())


@pytest.mark.parametrize("key", ["proxies", "gave_up", "stats:bumps"])
def test_status_survives_a_wrong_typed_key(
    redis_db: str, tmp_path: Path, key: str
) -> None:
    client = sync_client(redis_db)
    client.sadd(f"sticky_proxy:{key}", "x")
    result = run_status(tmp_path, redis_db)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_requeue_prints_hostile_records_safely(redis_db: str, tmp_path: Path) -> None:
    client = sync_client(redis_db)
    client.rpush("sticky_proxy:gave_up", ANSI * 100, json.dumps({"url": 5}))
    result = run_requeue(tmp_path, redis_db)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert len(result.stderr.splitlines()) == 2
    assert max(map(len, result.stderr.splitlines())) < 500


# -- the queue serializer ------------------------------------------------------------


def hostile_module(tmp_path: Path, name: str) -> Path:
    """A module that leaves a marker file when it is imported."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from scrapy import Request\n"
        "class Evil(Request):\n"
        "    pass\n"
    )
    return marker


def test_the_serializer_imports_no_class_it_was_not_told_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from scrapy import Request
    from scrapy.http import FormRequest
    from scrapy.utils.request import request_from_dict

    monkeypatch.syspath_prepend(str(tmp_path))
    marker = hostile_module(tmp_path, "hostile_sp_mod")
    entries = [
        {"url": "http://x/1", "_class": "hostile_sp_mod.Evil"},
        {"url": "http://x/2", "_class": "os.system"},
        {"url": "http://x/3", "_class": ["not", "a", "str"]},
        {"url": "http://x/4", "_class": "scrapy.settings.Settings"},
    ]
    for entry in entries * 2:
        request = request_from_dict(serializer.loads(json.dumps(entry)))
        assert request.url.startswith("data:")
        assert request.meta.get("dont_sticky_proxy") is True
        assert request.callback is not None and request.callback(None) is None
    assert not marker.exists()
    skip_warnings = [w for w in warnings(caplog) if "hostile_sp_mod.Evil" in w]
    assert len(skip_warnings) == 1
    # Scrapy's own request classes are rebuilt as they were.
    form = FormRequest("http://x/f", formdata={"a": "1"})
    for original in (form, Request("http://x/r", meta={"k": b"\x00"})):
        data = serializer.dumps(original.to_dict())
        again = request_from_dict(serializer.loads(data))
        assert type(again) is type(original) and again.url == original.url


def test_the_serializer_skips_entries_that_are_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever else is in the queue becomes a skipped request, counted and
    warned about once per kind, instead of an error that loses the pop."""
    from scrapy.utils.request import request_from_dict

    entries: list[str | bytes] = [
        "not json",
        b"\xff\xfe",
        '{"url": "http://x/1", "body": {"__b64__": 5}}',
        '{"url": "http://x/2", "body": {"__b64__": "abc"}}',
        '{"url": "http://x/3", "headers": {"__pairs__": [[1]]}}',
        "[1, 2]",
        '{"url": 5}',
        '{"url": "http://x/4", "meta": [1]}',
        '{"url": "http://x/5", "headers": {"a": [5]}}',
        "[" * 100_000,
    ]
    before = serializer.counts["skipped"]
    for entry in entries * 2:
        request = request_from_dict(serializer.loads(entry))
        assert request.url.startswith("data:")
        assert request.meta.get("dont_sticky_proxy") is True
    assert serializer.counts["skipped"] - before == 2 * len(entries)
    said = [w for w in warnings(caplog) if "that is no request" in w]
    assert len(said) == len(set(said)) and 5 <= len(said) <= len(entries)
    # A request of its own still round-trips.
    data = serializer.dumps(Request("http://x/ok", meta={"k": [1]}).to_dict())
    assert request_from_dict(serializer.loads(data)).url == "http://x/ok"


def test_the_serializer_allow_list_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scrapy.settings import Settings
    from scrapy.utils.request import request_from_dict

    from scrapy_sticky_proxy.config import StickyProxyConfig

    def parsed(settings: dict[str, Any]) -> StickyProxyConfig:
        return StickyProxyConfig.from_settings(Settings(settings), require_proxy=False)

    monkeypatch.syspath_prepend(str(tmp_path))
    marker = hostile_module(tmp_path, "allowed_sp_mod")
    allowed = {"STICKY_PROXY_SERIALIZER_CLASSES": ["allowed_sp_mod.Evil"]}
    serializer.configure(parsed(allowed).serializer_classes)
    data = json.dumps({"url": "http://x/1", "_class": "allowed_sp_mod.Evil"})
    request = request_from_dict(serializer.loads(data))
    assert type(request).__name__ == "Evil" and request.url == "http://x/1"
    assert marker.exists()
    # Request classes of the project's own package (SPIDER_MODULES).
    package = tmp_path / "projpkg_sp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "requests.py").write_text(
        "from scrapy import Request\nclass Mine(Request):\n    pass\n"
    )
    data = json.dumps({"url": "http://x/2", "_class": "projpkg_sp.requests.Mine"})
    assert request_from_dict(serializer.loads(data)).url.startswith("data:")
    serializer.configure(spider_modules=["projpkg_sp.spiders"])
    assert type(request_from_dict(serializer.loads(data))).__name__ == "Mine"
    from scrapy_sticky_proxy.errors import ConfigError

    with pytest.raises(ConfigError, match="STICKY_PROXY_SERIALIZER_CLASSES"):
        parsed({"STICKY_PROXY_SERIALIZER_CLASSES": [5]})


# -- acceptance: a crawl and the status command on a hostile namespace -------------


def seed_hostile_values(client: Any, ns: str, keys: list[str]) -> dict[str, int]:
    """Every hostile value of the issue, the first ones on keys the crawl
    will ban; returns the counts the store must end with."""
    entry = {"url": keys[0].replace("/0", "/99"), "_class": "hostile_crawl_mod.Evil"}
    client.zadd("items:requests", {json.dumps(entry): 0})  # scrapy-redis's queue
    for key, value in zip(keys, BAD_GENERATIONS, strict=False):
        client.set(f"{ns}:g:{key_digest(key)}", value)
    client.set(f"{ns}:g:zz", "7")
    client.hset(f"{ns}:proxies", "127.0.0.1:1", "[1e400, NaN, true]")
    client.set(f"{ns}:crawlers:h:1:{ANSI}", '{"start": NaN, "spider": "x"}')
    client.set(f"{ns}:stats:bumps", "abc")
    generation = len(BAD_GENERATIONS) + 1
    # Both bans of each poisoned key are refused by the script, not written.
    bump = 2 * len(BAD_GENERATIONS)
    return {
        "redis/skipped": generation + bump,
        "redis/skipped/generation": generation,
        "redis/skipped/bump": bump,
    }


def seed_wrong_types(client: Any, ns: str, keys: list[str]) -> dict[str, int]:
    client.rpush(f"{ns}:g:{key_digest('nothing')}", "1")
    client.set(f"{ns}:proxies", "not a hash")
    client.set(f"{ns}:gave_up", "not a list")
    client.rpush(f"{ns}:stats:bumps", "not a counter")
    client.hset(f"{ns}:crawlers:h:1:s", "not", "a string")
    client.rpush(f"{ns}:events", "a key named like the channel")
    # Give-ups cannot be written to a string: each is dropped (and logged).
    return {"redis/skipped": 1, "redis/skipped/generation": 1}


@pytest.mark.parametrize("seed", [seed_hostile_values, seed_wrong_types])
@deferred_f_from_coro_f
async def test_a_crawl_and_status_on_a_hostile_namespace(
    sandbox: Sandbox,
    redis_db: str,
    tmp_path: Path,
    seed: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = sync_client(redis_db)
    keys = [f"{sandbox.site_url}/item/{i}" for i in range(10)]
    expected = seed(client, "t", keys)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = hostile_module(tmp_path, "hostile_crawl_mod")
    sandbox.site.ban_rule = ban_all("403")
    settings = redis_settings(
        sandbox,
        redis_db,
        STICKY_PROXY_MAX_REROLLS=1,
        SCHEDULER="scrapy_redis.scheduler.Scheduler",
        DUPEFILTER_CLASS="scrapy_redis.dupefilter.RFPDupeFilter",
        SCHEDULER_SERIALIZER="scrapy_sticky_proxy.serializer",
        REDIS_URL=redis_db,
    )
    result = await asyncio.wait_for(
        crawl(ItemsSpider, settings, base=sandbox.site_url, n=10, follow=False), 60
    )
    stats = result.stats
    assert stats["finish_reason"] == "finished"
    assert stats["sticky_proxy/gave_up"] == 10
    assert stats["sticky_proxy/bans"] == 20
    # Each item on generation 0 then 1, whatever was seeded for its key.
    assert Counter(h.path for h in sandbox.site.hits) == {
        f"/item/{i}": 2 for i in range(10)
    }
    assert {r.session for r in sandbox.gateway.log} == {
        session_id(key, g, PRESETS["sandbox"].id_rules) for key in keys for g in (0, 1)
    }
    # The stats as the middleware wrote them at close, and the store's own
    # count once it drained its writes (the middleware flushes its stats
    # before it closes the store: the last refused bumps come after).
    store = result.crawler.get_downloader_middleware(StickyProxyMiddleware).store
    assert skipped(store) == expected
    got = {k[len("sticky_proxy/") :]: v for k, v in stats.items() if "/skipped" in k}
    assert got["redis/skipped/generation"] == expected["redis/skipped/generation"]
    # The queue entry naming a class nobody allowed: never imported, never sent.
    assert not marker.exists()
    queued = 1 if seed is seed_hostile_values else None
    assert stats.get("sticky_proxy/serializer/skipped") == queued
    assert not [k for k in stats if k.startswith("spider_exceptions")]
    if seed is seed_hostile_values:
        # Warnings only: not one ERROR line for anything that was seeded.
        assert "log_count/ERROR" not in stats
    assert 0 < got["redis/skipped"] <= expected["redis/skipped"]
    burned = [client.get(f"t:g:{key_digest(key)}") for key in keys]
    poisoned = len(BAD_GENERATIONS) if seed is seed_hostile_values else 0
    assert burned[poisoned:] == ["2"] * (10 - poisoned)
    status = run_status(tmp_path, redis_db, "--namespace", "t", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["burned_keys"] == 10 - poisoned


@pytest.mark.parametrize("benched_days", [None, 29])
@deferred_f_from_coro_f
async def test_dead_proxy_health_from_redis_does_not_close_a_crawl(
    sandbox: Sandbox, redis_db: str, benched_days: int | None
) -> None:
    """Health in Redis (left by an earlier crawl, or written by anyone)
    saying every proxy of the list is dead, and benched for 29 days: this
    crawl still tries the proxy itself, and it answers."""
    proxy_id = sandbox.gateway_url.rsplit("@", 1)[1]
    retry_at = None if benched_days is None else time.time() + benched_days * 86400
    seeded = json.dumps([12, retry_at, benched_days is None])
    sync_client(redis_db).hset("t:proxies", proxy_id, seeded)
    settings = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_LIST": [sandbox.gateway_url],
        "STICKY_PROXY_BACKEND": "redis",
        "STICKY_PROXY_REDIS_URL": redis_db,
        "STICKY_PROXY_NAMESPACE": "t",
    }
    result = await asyncio.wait_for(
        crawl(ItemsSpider, settings, base=sandbox.site_url, n=5, follow=False), 60
    )
    assert result.stats["finish_reason"] == "finished"
    assert len(result.items) == 5
