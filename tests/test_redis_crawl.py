"""The Redis backend in real crawls: shared queue, dedup and burned sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

from .conftest import assert_absent, assert_no_leak, crawl
from .spiders import ItemsSpider, at_counts, hooked, item_of
from .test_crawl import settings_for
from .test_example import PROJECT, copy_of_project


def redis_settings(sandbox: Sandbox, url: str, **extra: Any) -> dict[str, Any]:
    return settings_for(
        sandbox,
        STICKY_PROXY_BACKEND="redis",
        STICKY_PROXY_REDIS_URL=url,
        STICKY_PROXY_NAMESPACE="t",
        **extra,
    )


def test_two_processes_share_one_queue_and_dupefilter(
    sandbox: Sandbox, redis_db: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_db)
    # Two index pages that link to the same 60 items: whichever process
    # finds an item second, the shared dupefilter must drop it.
    indexes = [f"{sandbox.site_url}/?n=60", f"{sandbox.site_url}/?n=60&again=1"]
    client.rpush("demo_redis:start_urls", *(json.dumps({"url": u}) for u in indexes))
    env = {
        **os.environ,
        "STICKY_PROXY_URL": sandbox.gateway_url,
        # This checkout's code, whatever an editable install points to.
        "PYTHONPATH": str(PROJECT.parent),
    }
    project = copy_of_project(tmp_path)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "demo_redis",
                "-O",
                str(tmp_path / f"items{n}.jsonl"),
                "-s",
                f"REDIS_URL={redis_db}",
                "-s",
                "MAX_IDLE_TIME_BEFORE_CLOSE=2",
                "-s",
                "LOG_LEVEL=INFO",
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-3000:]

    hits = Counter(hit.path for hit in sandbox.site.hits)
    assert len(hits) == 242
    assert set(hits.values()) == {1}, "a URL was fetched twice"
    rows = [
        json.loads(line)
        for n in range(2)
        for line in (tmp_path / f"items{n}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 240
    for output in outputs:
        assert_absent(sandbox.password, output)
    # Nothing pickled in Redis: every queued request was JSON.
    assert client.zcard("demo_redis:requests") == 0


@pytest.mark.parametrize("max_keys", [100_000, 5])
@deferred_f_from_coro_f
async def test_a_later_crawl_never_reuses_a_burned_session(
    sandbox: Sandbox, redis_db: str, log_text: Any, max_keys: int
) -> None:
    # With max_keys=5 the local view forgets most burned keys: the
    # middleware must ask Redis for them rather than start at generation 0.
    rule = ban_fraction(0.3)
    sandbox.site.ban_rule = rule
    first = await crawl(
        ItemsSpider,
        redis_settings(sandbox, redis_db, STICKY_PROXY_MAX_KEYS=max_keys),
        base=sandbox.site_url,
        n=60,
        follow=False,
    )
    assert first.stats["sticky_proxy/bans"] >= 5
    burned = {
        record.session
        for record in sandbox.gateway.log
        if rule(record.exit_ip, "") is not None
    }
    sandbox.reset()
    second = await crawl(
        ItemsSpider,
        redis_settings(sandbox, redis_db, STICKY_PROXY_MAX_KEYS=max_keys),
        base=sandbox.site_url,
        n=60,
        follow=False,
    )
    used = {record.session for record in sandbox.gateway.log}
    assert used and not used & burned
    assert len(second.items) == 60
    assert_no_leak(sandbox.password, second, log_text(), sandbox)


@deferred_f_from_coro_f
async def test_healthy_requests_cost_no_redis_commands(
    sandbox: Sandbox, redis_db: str
) -> None:
    client = redis.Redis.from_url(redis_db, decode_responses=True)

    def commands() -> int:
        stats = client.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    from scrapy import signals

    marks: dict[int, int] = {}  # response number -> Redis commands so far

    def mark(n: int) -> Callable[[], None]:
        return lambda: marks.__setitem__(n, commands())

    # Redis's command count at the 100th and 1000th response: the steady
    # state, start-up and close left out.
    Counted = hooked(
        signals.response_received, at_counts({100: mark(100), 1000: mark(1000)})
    )

    client.config_resetstat()
    result = await crawl(
        Counted, redis_settings(sandbox, redis_db), base=sandbox.site_url, n=250
    )
    assert result.stats["sticky_proxy/requests"] == 1000
    steady = marks[1000] - marks[100]
    assert steady / 900 <= 0.01, client.info("commandstats")
    # Start (connections, PING, SUBSCRIBE, SCAN, the first heartbeat) and
    # close included, the whole crawl still stays under the bound. Later
    # heartbeats (one SET every HEARTBEAT_INTERVAL seconds, however many
    # requests: a crawl slowed by a loaded machine has more) are left out;
    # the steady state above counts every command, SETs included.
    stats = client.info("commandstats")
    later_beats = max(stats.get("cmdstat_set", {}).get("calls", 0) - 1, 0)
    total = commands() - later_beats
    assert total / 1000 <= 0.01, stats


@deferred_f_from_coro_f
async def test_unreachable_redis_stops_the_crawl_with_a_clear_error(
    sandbox: Sandbox, log_text: Any, refused_port: Callable[[], int]
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{refused_port()}/0"
    result = await crawl(
        ItemsSpider, redis_settings(sandbox, url), base=sandbox.site_url, n=10
    )
    assert result.stats["finish_reason"] == "sticky_proxy_store_unavailable"
    text = log_text()
    assert "cannot reach Redis at redis://:***@127.0.0.1" in text
    assert_absent("hunter2", text)
    assert sandbox.gateway.log == []


@deferred_f_from_coro_f
async def test_redis_killed_and_restarted_mid_crawl(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from scrapy import signals

    from .redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    rule = ban_fraction(0.2)
    sandbox.site.ban_rule = rule
    # Kills Redis after 40 items and starts it again after 120.
    Chaos = hooked(
        signals.item_scraped, at_counts({40: server.kill, 120: server.start})
    )

    try:
        result = await crawl(
            Chaos,
            redis_settings(
                sandbox,
                server.url,
                CONCURRENT_REQUESTS=4,
                CONCURRENT_REQUESTS_PER_DOMAIN=4,
            ),
            base=sandbox.site_url,
            n=100,
        )
        pages = {i["item"] for i in result.items if i["part"] == "page"}
        gave_up = result.stats.get("sticky_proxy/gave_up", 0)
        assert len(pages) + gave_up == 100
        assert len(result.items) == 400 - 4 * gave_up
        banned_keys = {
            item_of(h.path) for h in sandbox.site.hits if rule(h.client_ip, h.path)
        }
        client = redis.Redis.from_url(server.url)
        # Redis came back empty: the bans of the whole crawl are there again,
        # replayed or made after the restart.
        assert len(client.keys("t:g:*")) == len(banned_keys) > 0
        assert result.stats["finish_reason"] == "finished"
    finally:
        server.stop()


@deferred_f_from_coro_f
async def test_rerolls_through_the_scrapy_redis_queue_keep_their_budget(
    sandbox: Sandbox, redis_db: str
) -> None:
    # Every re-roll copy goes through scrapy-redis's queue as JSON; what it
    # carries of its attempts must survive that, or a site that bans
    # everything is re-rolled forever.
    import asyncio

    from scrapy_sticky_proxy.sandbox import ban_all

    sandbox.site.ban_rule = ban_all("403")
    settings = redis_settings(
        sandbox,
        redis_db,
        SCHEDULER="scrapy_redis.scheduler.Scheduler",
        DUPEFILTER_CLASS="scrapy_redis.dupefilter.RFPDupeFilter",
        SCHEDULER_SERIALIZER="scrapy_sticky_proxy.serializer",
        REDIS_URL=redis_db,
        STICKY_PROXY_MAX_REROLLS=2,
    )
    result = await asyncio.wait_for(
        crawl(ItemsSpider, settings, base=sandbox.site_url, n=10, follow=False), 60
    )
    assert result.stats["sticky_proxy/gave_up"] == 10
    assert result.stats["sticky_proxy/bans"] == 30
