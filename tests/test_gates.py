"""Route gates (issue 10, defects 1-4 and 6): every way a probe ends settles
its gate, no wait is unbounded, a closing spider stops within seconds, a
hanging gateway does not serialise the crawl, an outage sends one probe per
backoff step, and static proxies that all refuse are waited out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_f_from_coro_f, deferred_from_coro

from scrapy_sticky_proxy.routing.gate import GIVE_UP, GO, WAIT, GatePolicy, RouteGate
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import CrawlResult, crawl, records
from .servers import ServerProcess
from .spiders import ItemsSpider, at_counts, hooked
from .test_crawl import settings_for

ROOT = Path(__file__).resolve().parent.parent


async def crawl_within(seconds: float, *args: Any, **kwargs: Any) -> CrawlResult:
    """crawl(), failing (instead of hanging the suite) if it does not end."""
    try:
        return await asyncio.wait_for(crawl(*args, **kwargs), seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"the crawl did not end within {seconds} s") from None


def refused(stats: dict[str, Any]) -> int:
    """Connection attempts the route refused, whatever Scrapy calls them."""
    prefix = "downloader/exception_type_count/"
    return sum(
        count
        for name, count in stats.items()
        if name.startswith(prefix) and "ConnectionRefused" in name
    )


class Rewriter:
    """A downloader middleware below ours that answers each request once
    with a new Request (as URL-rewriting or signing middlewares do)."""

    def process_request(self, request: Request) -> Request | None:
        if request.meta.get("rewritten"):
            return None
        meta = {**request.meta, "rewritten": True}
        return request.replace(meta=meta, dont_filter=True)


@deferred_f_from_coro_f
async def test_a_probe_the_http_cache_drops_settles_its_gate(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # HTTPCACHE_IGNORE_MISSING drops every request, the probe first; its
    # waiters used to wait for it forever.
    settings = settings_for(
        sandbox,
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_IGNORE_MISSING=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=8, follow=False
    )
    assert result.items == []
    assert result.stats["httpcache/ignore"] == 8
    assert result.stats["finish_reason"] == "finished"


@deferred_f_from_coro_f
async def test_a_probe_replaced_on_its_way_down_does_not_wait_behind_itself(
    sandbox: Sandbox,
) -> None:
    settings = settings_for(
        sandbox, DOWNLOADER_MIDDLEWARES={"tests.test_gates.Rewriter": 745}
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_url, n=8, follow=False
    )
    assert len(result.items) == 8


@pytest.mark.parametrize("how", ["closespider_timeout", "stop"])
@deferred_f_from_coro_f
async def test_a_spider_closing_during_an_outage_stops_within_seconds(
    sandbox: Sandbox, tmp_path: Path, how: str
) -> None:
    # The gateway goes away for good at the 5th item; the default outage
    # timeout would hold the waiting requests for ten minutes.
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox, STICKY_PROXY_GAVE_UP_FILE=str(gave_up), CONCURRENT_REQUESTS=8
    )
    crawler_of: list[Any] = []
    if how == "closespider_timeout":
        settings["CLOSESPIDER_TIMEOUT"] = 4
        action = sandbox.gateway_refuse
    else:

        def action() -> None:
            sandbox.gateway_refuse()
            # What one SIGTERM or Ctrl-C does, a second after the outage.
            call_later(1, lambda: deferred_from_coro(crawler_of[0].stop_async()))

    class Spider(hooked(signals.item_scraped, at_counts({5: action}))):  # type: ignore[misc]
        @classmethod
        def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
            crawler_of.append(crawler)
            return super().from_crawler(crawler, *args, **kwargs)

    start = time.monotonic()
    result = await crawl_within(
        40, Spider, settings, base=sandbox.site_url, n=60, follow=False
    )
    assert time.monotonic() - start < 40
    expected = "closespider_timeout" if how != "stop" else "shutdown"
    assert result.stats["finish_reason"] == expected
    held = [r for r in records(gave_up) if r["reasons"][-1] == "spider_closing"]
    assert held, "the requests held at the gate were not recorded"
    items = {f"{sandbox.site_url}/item/{i['item']}" for i in result.items}
    assert not items & {r["url"] for r in held}


SPIDER = """
import scrapy

class Many(scrapy.Spider):
    name = "many"
    async def start(self):
        for i in range(20):
            yield scrapy.Request(f"http://127.0.0.1:{PORT}/item/{i}")
"""


def test_one_sigterm_ends_a_crawl_held_by_an_outage(
    sandbox: Sandbox, tmp_path: Path, refused_port: Callable[[], int]
) -> None:
    spider = tmp_path / "many.py"
    spider.write_text(SPIDER.replace("{PORT}", str(sandbox.site_port)))
    closed = refused_port()  # nothing listens: every connection is refused
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STICKY_PROXY_URL": f"http://user:refused-pw@127.0.0.1:{closed}",
    }
    settings = {
        "ADDONS": json.dumps({"scrapy_sticky_proxy.Addon": 100}),
        "TELNETCONSOLE_ENABLED": "False",
        "LOG_LEVEL": "INFO",
        "STICKY_PROXY_PROVIDER": "sandbox",
    }
    args = [sys.executable, "-m", "scrapy", "runspider", str(spider)]
    for name, value in settings.items():
        args += ["-s", f"{name}={value}"]
    crawler = ServerProcess("scrapy", args, cwd=tmp_path, env=env)
    try:
        crawler.wait_ready("refuses connections: requests with no other proxy wait")
        crawler.proc.send_signal(signal.SIGTERM)
        crawler.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError("one SIGTERM did not end the crawl in 30 s") from None
    finally:
        output = crawler.stop()
    assert "'finish_reason': 'shutdown'" in output
    assert "spider_closing" in output


@deferred_f_from_coro_f
async def test_a_hanging_gateway_does_not_serialise_the_crawl(
    sandbox: Sandbox,
) -> None:
    # Until a route's first answer only its probe is in flight; a probe that
    # times out proved nothing, so the others must not wait for another one.
    sandbox.gateway_hang()
    settings = settings_for(
        sandbox, DOWNLOAD_TIMEOUT=1, CONCURRENT_REQUESTS=16, RETRY_TIMES=1
    )
    result = await crawl_within(
        60, ItemsSpider, settings, base=sandbox.site_url, n=8, follow=False
    )
    assert result.items == []
    assert sandbox.gateway.peak_connections >= 7


@deferred_f_from_coro_f
async def test_an_outage_sends_one_probe_per_backoff_step(sandbox: Sandbox) -> None:
    # The gateway goes away for 1.2 s. Requests in flight fail too; each of
    # their failures used to wake the waiters and send one more probe.
    def outage() -> None:
        sandbox.gateway_refuse()
        call_later(1.2, sandbox.gateway_normal)

    Outage = hooked(signals.item_scraped, at_counts({3: outage}))
    settings = settings_for(sandbox, CONCURRENT_REQUESTS=8)
    result = await crawl_within(
        40, Outage, settings, base=sandbox.site_url, n=40, follow=False
    )
    # Up to 8 requests in flight fail once each; then the first backoff
    # step (0.5 s) sends one probe, refused; the next (1.5 s) finds it back.
    assert refused(result.stats) <= 8 + 1, refused(result.stats)
    assert len(result.items) == 40


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_gateway_that_resets_at_accept_is_waited_out(
    sandbox: Sandbox, scheme: str
) -> None:
    # A connection reset at accept (ConnectError 104) is the gateway's, like
    # a refusal: it used to be left to RetryMiddleware, which dropped each
    # request after its tries, unrecorded.
    def outage() -> None:
        sandbox.gateway_reset()
        # Past the first backoff step (0.5 s): one probe is reset too.
        call_later(1.2, sandbox.gateway_normal)

    Outage = hooked(signals.item_scraped, at_counts({5: outage}))
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    settings = settings_for(sandbox, CONCURRENT_REQUESTS=8)
    result = await crawl_within(60, Outage, settings, base=base, n=60, follow=False)
    assert len(result.items) == 60
    stats = result.stats
    assert stats.get("sticky_proxy/gave_up", 0) == 0
    assert stats.get("sticky_proxy/bans", 0) == 0
    assert stats["sticky_proxy/outage_retries"] >= 1


@deferred_f_from_coro_f
async def test_a_proxy_closing_a_connect_unanswered_fails_fast(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Scrapy's CONNECT endpoint heard only the proxy's answer: a connection
    # closed before it hung each https request for DOWNLOAD_TIMEOUT.
    sandbox.gateway_drop()
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        DOWNLOAD_TIMEOUT=120,
        STICKY_PROXY_OUTAGE_TIMEOUT=1,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
    )
    result = await crawl_within(
        30, ItemsSpider, settings, base=sandbox.site_https_url, n=4, follow=False
    )
    assert result.items == []
    assert {r["reasons"][-1] for r in records(gave_up)} == {"unreachable/outage"}


def test_refusals_of_requests_in_flight_add_no_probe() -> None:
    # The same, step by step on the gate's own clock.
    gate = RouteGate(GatePolicy(probe_wait=10, backoff_max=10, outage_timeout=60))
    first: dict[str, Any] = {}
    assert gate.decide(first, 0.0) == (GO, 0.0)  # the credential probe
    gate.answered(first, 0.1)
    in_flight = [{} for _ in range(3)]
    for meta in in_flight:
        assert gate.decide(meta, 1.0) == (GO, 0.0)
    assert gate.refused(in_flight[0], 1.1) == 0.0  # the outage starts
    waiting = [{} for _ in range(5)]
    for meta in in_flight[1:]:
        gate.refused(meta, 1.2)  # no news: neither backoff nor probe
    for meta in waiting:
        assert gate.decide(meta, 1.3) == (WAIT, pytest.approx(0.3))
    verdicts = [gate.decide(meta, 1.6)[0] for meta in waiting]
    assert verdicts == [GO, WAIT, WAIT, WAIT, WAIT]  # one probe for the step
    probe = waiting[0]
    gate.refused(probe, 1.7)  # the probe failed: the backoff doubles
    assert gate.decide(waiting[1], 2.6) == (WAIT, pytest.approx(0.1))
    assert [gate.decide(meta, 2.8)[0] for meta in waiting[1:]] == [GO, WAIT, WAIT, WAIT]
    assert gate.answered(waiting[1], 2.9) == pytest.approx(1.8)
    assert [gate.decide(meta, 3.0)[0] for meta in waiting] == [GO] * 5


def test_a_probe_that_proves_nothing_opens_the_gate() -> None:
    gate = RouteGate(GatePolicy(probe_wait=10, backoff_max=10, outage_timeout=60))
    probe: dict[str, Any] = {}
    other: dict[str, Any] = {}
    assert gate.decide(probe, 0.0) == (GO, 0.0)
    assert gate.decide(other, 1.0) == (WAIT, 9.0)
    # A copy of the probe made below us is still the probe: it goes.
    assert gate.decide(dict(probe), 2.0) == (GO, 0.0)
    gate.inconclusive(probe, 3.0)  # a timeout, a reset, a dropped request
    assert gate.decide(other, 3.0) == (GO, 0.0)
    # A probe that never comes back holds the others probe_wait at most.
    late = RouteGate(GatePolicy(probe_wait=10, backoff_max=10, outage_timeout=60))
    assert late.decide({}, 0.0) == (GO, 0.0)
    assert late.decide(other, 9.0) == (WAIT, 1.0)
    assert late.decide(other, 10.0) == (GO, 0.0)


def test_an_outage_past_its_timeout_gives_up_but_still_probes() -> None:
    gate = RouteGate(GatePolicy(probe_wait=10, backoff_max=1, outage_timeout=3))
    gate.refused({}, 0.0)
    assert gate.decide({}, 0.2)[0] == WAIT
    assert gate.decide({}, 3.2)[0] == GO  # one probe per step, even now
    assert gate.decide({}, 3.3)[0] == GIVE_UP


@pytest.fixture
def proxies() -> Iterator[list[Sandbox]]:
    boxes = [Sandbox(password=f"static-gate-pw-{i}").start() for i in range(3)]
    yield boxes
    for box in boxes:
        box.stop()


@deferred_f_from_coro_f
async def test_every_static_proxy_down_for_seconds_loses_nothing(
    proxies: list[Sandbox],
) -> None:
    def outage() -> None:
        for box in proxies:
            box.gateway_refuse()
        for box in proxies:
            call_later(1.5, box.gateway_normal)

    Outage = hooked(signals.item_scraped, at_counts({10: outage}))
    result = await crawl_within(
        60,
        Outage,
        {"STICKY_PROXY_LIST": [box.gateway_url for box in proxies]},
        base=proxies[0].site_url,
        n=50,
        follow=False,
    )
    assert len(result.items) == 50
    stats = result.stats
    assert stats.get("sticky_proxy/gave_up", 0) == 0
    # Failing over is not a ban: no session was burned for it.
    assert stats.get("sticky_proxy/rerolls", 0) == 0
    assert stats.get("sticky_proxy/bans", 0) == 0


@deferred_f_from_coro_f
async def test_static_proxies_that_never_come_back_close_the_spider(
    refused_port: Callable[[], int],
) -> None:
    closed = [refused_port(), refused_port()]
    with Sandbox() as site:
        result = await crawl_within(
            60,
            ItemsSpider,
            {
                "STICKY_PROXY_LIST": [f"http://127.0.0.1:{p}" for p in closed],
                "STICKY_PROXY_LIST_UNHEALTHY_AFTER": 1,
                "STICKY_PROXY_LIST_DEAD_AFTER": 3,
                "STICKY_PROXY_OUTAGE_BACKOFF_MAX": 0.2,
            },
            base=site.site_url,
            n=20,
            follow=False,
        )
    assert result.stats["finish_reason"] == "sticky_proxy_no_proxies_left"


@deferred_f_from_coro_f
async def test_a_gateway_that_never_answered_closes_the_crawl_soon(
    tmp_path: Path, log_text: Any, refused_port: Callable[[], int]
) -> None:
    """A wrong port is a configuration problem, not an outage: the crawl
    closes after STICKY_PROXY_UNREACHABLE_TIMEOUT, not OUTAGE_TIMEOUT (600 s),
    names the host:port it tried, and records what it held."""
    closed = refused_port()  # nothing listens: every connection is refused
    gave_up = tmp_path / "gave_up.jsonl"
    with Sandbox() as site:
        result = await crawl_within(
            60,
            ItemsSpider,
            {
                "STICKY_PROXY_PROVIDER": "sandbox",
                "STICKY_PROXY_URL": f"http://user:s3cret-pw@127.0.0.1:{closed}",
                "STICKY_PROXY_UNREACHABLE_TIMEOUT": 1,
                "STICKY_PROXY_GAVE_UP_FILE": str(gave_up),
            },
            base=site.site_url,
            n=5,
            follow=False,
        )
    stats = result.stats
    assert stats["finish_reason"] == "sticky_proxy_gateway_unreachable"
    text = log_text()
    assert f"the gateway 127.0.0.1:{closed} (STICKY_PROXY_URL) has not answered" in text
    assert "STICKY_PROXY_UNREACHABLE_TIMEOUT" in text
    reasons = {r["reasons"][-1] for r in records(gave_up)}
    assert reasons <= {"unreachable/never_answered", "spider_closing"}, reasons
    assert stats.get("sticky_proxy/gave_up", 0) + stats.get(
        "sticky_proxy/failed", 0
    ) == len(records(gave_up))
    assert len({r["url"] for r in records(gave_up)}) == 5  # every item recorded


@deferred_f_from_coro_f
async def test_cached_answers_do_not_hide_a_gateway_that_never_answered(
    tmp_path: Path, refused_port: Callable[[], int]
) -> None:
    """A second run on a warm HTTP cache: the cache answers some pages
    without the gateway, and must not count as the gateway's first answer."""
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    with Sandbox() as sandbox:
        warm = await crawl_within(
            60,
            ItemsSpider,
            {**settings_for(sandbox), **cache},
            base=sandbox.site_url,
            n=5,
            follow=False,
        )
        assert len(warm.items) == 5
        closed = refused_port()  # the next run's gateway: nothing listens
        result = await crawl_within(
            60,
            ItemsSpider,
            {
                **cache,
                "STICKY_PROXY_PROVIDER": "sandbox",
                "STICKY_PROXY_URL": f"http://user:s3cret-pw@127.0.0.1:{closed}",
                "STICKY_PROXY_UNREACHABLE_TIMEOUT": 1,
                "STICKY_PROXY_OUTAGE_TIMEOUT": 120,
            },
            base=sandbox.site_url,
            n=10,
            follow=False,
        )
    assert result.stats["finish_reason"] == "sticky_proxy_gateway_unreachable"
    assert result.stats["httpcache/hit"] >= 1
