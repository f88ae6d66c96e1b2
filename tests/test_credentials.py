"""The proxy credential never rides on a Request (issue 11, part 1): it is
added next to the downloader and taken off before anything else sees the
request again, so the HTTP cache, JOBDIR and scrapy-redis's queue never
store it, whatever copies RetryMiddleware and RedirectMiddleware make."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from scrapy import Request
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import crawl
from .spiders import ItemsSpider
from .test_crawl import settings_for

PASSWORD = "Zq9/distinct proxy@pw:4711"  # needs percent-encoding in a URL


class MixedSpider(ItemsSpider):
    """Items, every third one behind a redirect to the other host name."""

    async def start(self) -> Any:
        for i in range(self.n):
            path = f"/r/{i}?x=1" if i % 3 == 0 else f"/item/{i}"
            yield Request(f"{self.base}{path}", callback=self.parse_item)


def once_503() -> Any:
    """A site rule: the first request of every fourth item answers 503 (so
    RetryMiddleware copies it); everything else is served."""
    seen: set[str] = set()
    lock = threading.Lock()

    def rule(ip: str, path: str) -> str | None:
        page = path.split("?", maxsplit=1)[0]
        if not page.startswith("/item/") or int(page.split("/")[2]) % 4:
            return None
        with lock:
            if page in seen:
                return None
            seen.add(page)
        return "503"

    return rule


def forms_of_the_secret(sandbox: Sandbox) -> list[bytes]:
    """The password as text and percent-encoded, and every Proxy-Authorization
    value the crawl sent (base64 of user-session-ID:password)."""
    forms = [PASSWORD.encode(), quote(PASSWORD, safe="").encode()]
    for record in sandbox.gateway.log:
        user = f"{sandbox.username}-session-{record.session}"
        forms.append(base64.b64encode(f"{user}:{PASSWORD}".encode()))
    forms.append(b"Proxy-Authorization")
    forms.append(b"proxy-authorization")
    return forms


def assert_nowhere(forms: list[bytes], blobs: dict[str, bytes]) -> None:
    hits = [name for name, blob in blobs.items() if any(f in blob for f in forms)]
    # Names only: the assertion message must not print the secret.
    assert not hits, f"a credential was found in {len(hits)} places: {hits[:3]}"


def files_under(*roots: Path) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def secret_sandbox() -> Iterator[Sandbox]:
    with Sandbox(password=PASSWORD) as sb:
        sb.site.ban_rule = once_503()
        yield sb


def common(sandbox: Sandbox, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return settings_for(
        sandbox,
        HTTPCACHE_ENABLED=True,
        HTTPCACHE_DIR=str(tmp_path / "cache"),
        RETRY_HTTP_CODES=[503],
        HTTPCACHE_IGNORE_HTTP_CODES=[503],
        **extra,
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_jobdir_and_http_cache_never_hold_the_credential(
    secret_sandbox: Sandbox, tmp_path: Path, log_text: Any, scheme: str
) -> None:
    sandbox = secret_sandbox
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    jobdir = tmp_path / "job"
    settings = common(sandbox, tmp_path, JOBDIR=str(jobdir))
    # Paused by CLOSESPIDER_ITEMCOUNT with requests in the disk queue, then
    # resumed from the job directory.
    first = await crawl(
        MixedSpider, {**settings, "CLOSESPIDER_ITEMCOUNT": 8}, base=base, n=30
    )
    assert first.stats["finish_reason"] == "closespider_itemcount"
    queued = files_under(jobdir)
    second = await crawl(MixedSpider, settings, base=base, n=30)
    pages = {i["item"] for r in (first, second) for i in r.items if i["part"] == "page"}
    assert pages == set(range(30))
    runs = (first, second)
    # Copies of RetryMiddleware (503) and of RedirectMiddleware (to the other
    # host name) went through the queue and the cache.
    assert sum(r.stats.get("retry/count", 0) for r in runs) >= 1
    assert sum(r.stats.get("downloader/response_status_count/302", 0) for r in runs)
    forms = forms_of_the_secret(sandbox)
    blobs = {**queued, **files_under(jobdir, tmp_path / "cache")}
    blobs["log"] = log_text().encode()
    for run in runs:
        blobs["stats"] = repr(run.stats).encode()
        blobs["items"] = repr(run.items).encode()
        assert_nowhere(forms, blobs)
    assert any("requests.queue" in name for name in queued)
    assert any(name.endswith("request_headers") for name in blobs)


@deferred_f_from_coro_f
async def test_the_scrapy_redis_queue_never_holds_the_credential(
    secret_sandbox: Sandbox, tmp_path: Path, log_text: Any, redis_db: str
) -> None:
    sandbox = secret_sandbox
    client = redis.Redis.from_url(redis_db)
    seen: list[bytes] = []
    monitor = client.monitor()
    stop = threading.Event()

    def watch() -> None:
        with monitor as commands:
            while not stop.is_set():
                seen.append(str(commands.next_command()).encode())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    settings = common(
        sandbox,
        tmp_path,
        SCHEDULER="scrapy_redis.scheduler.Scheduler",
        DUPEFILTER_CLASS="scrapy_redis.dupefilter.RFPDupeFilter",
        SCHEDULER_SERIALIZER="scrapy_sticky_proxy.serializer",
        SCHEDULER_PERSIST=True,
        REDIS_URL=redis_db,
        STICKY_PROXY_BACKEND="redis",
        STICKY_PROXY_REDIS_URL=redis_db,
    )
    result = await crawl(MixedSpider, settings, base=sandbox.site_url, n=30)
    assert {i["item"] for i in result.items if i["part"] == "page"} == set(range(30))
    assert any(b"ZADD" in c and b"items:requests" in c for c in seen)
    client.ping()  # the next command wakes the monitor up to see stop
    stop.set()
    client.ping()
    watcher.join(10)
    blobs = {"monitor": b"\n".join(seen), "log": log_text().encode()}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        if kind == b"string":
            blobs[repr(key)] = key + (client.get(key) or b"")
        elif kind == b"list":
            blobs[repr(key)] = key + b"".join(client.lrange(key, 0, -1))
        elif kind == b"zset":
            blobs[repr(key)] = key + b"".join(client.zrange(key, 0, -1))
        elif kind == b"hash":
            blobs[repr(key)] = key + repr(client.hgetall(key)).encode()
        elif kind == b"set":
            blobs[repr(key)] = key + b"".join(client.smembers(key))
    blobs.update(files_under(tmp_path / "cache"))
    blobs["stats"] = repr(result.stats).encode()
    blobs["items"] = repr(result.items).encode()
    assert_nowhere(forms_of_the_secret(sandbox), blobs)


def test_manual_wiring_without_auth_or_ledger_is_refused() -> None:
    from scrapy.settings import Settings

    from scrapy_sticky_proxy._wiring import check_middleware_order
    from scrapy_sticky_proxy.errors import ConfigError

    ours = {"scrapy_sticky_proxy.StickyProxyMiddleware": 740}
    with pytest.raises(ConfigError, match="StickyProxyAuth is missing"):
        check_middleware_order(Settings({"DOWNLOADER_MIDDLEWARES": ours}))
    no_ledger = {**ours, "scrapy_sticky_proxy.auth.StickyProxyAuth": 999}
    with pytest.raises(ConfigError, match="StickyProxyLedger is missing"):
        check_middleware_order(Settings({"DOWNLOADER_MIDDLEWARES": no_ledger}))
    ours["scrapy_sticky_proxy.ledger.StickyProxyLedger"] = 10
    early = {**ours, "scrapy_sticky_proxy.auth.StickyProxyAuth": 850}
    with pytest.raises(ConfigError, match="after StickyProxyMiddleware and the HTTP"):
        check_middleware_order(Settings({"DOWNLOADER_MIDDLEWARES": early}))
    good = {**ours, "scrapy_sticky_proxy.auth.StickyProxyAuth": 999}
    check_middleware_order(
        Settings({"DOWNLOADER_MIDDLEWARES": good, "HTTPPROXY_ENABLED": False})
    )


@deferred_f_from_coro_f
async def test_without_http_proxy_middleware_the_crawl_still_authenticates(
    sandbox: Sandbox,
) -> None:
    # HttpProxyMiddleware is no longer what puts the credential on the wire.
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, HTTPPROXY_ENABLED=False),
        base=sandbox.site_url,
        n=5,
        follow=False,
    )
    assert len(result.items) == 5
    assert sandbox.gateway.auth_failures == 0


@deferred_f_from_coro_f
async def test_a_tunnel_error_does_not_carry_the_header(sandbox: Sandbox) -> None:
    """A proxy whose answer to CONNECT has no status line (here it sends
    the request back) makes Scrapy raise TunnelError quoting the first bytes
    of that answer: the CONNECT request, Proxy-Authorization included, which
    RetryMiddleware then logged (at DEBUG, then at ERROR on giving up).
    The crawl helper decodes every "Basic" value in the log."""
    sandbox.gateway_echo()
    settings = settings_for(sandbox, RETRY_TIMES=1, STICKY_PROXY_MAX_REROLLS=0)
    result = await crawl(ItemsSpider, settings, base=sandbox.site_https_url, n=2)
    assert result.items == []
    assert result.stats.get(
        "downloader/exception_type_count/scrapy.core.downloader.handlers.http11.TunnelError"
    )
