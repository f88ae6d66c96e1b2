from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from scrapy import signals
from scrapy.crawler import Crawler, CrawlerRunner
from scrapy.utils.defer import maybe_deferred_to_future

from scrapy_sticky_proxy.sandbox import Sandbox

BASE_SETTINGS: dict[str, Any] = {
    "ADDONS": {"scrapy_sticky_proxy.Addon": 100},
    "TELNETCONSOLE_ENABLED": False,
    "REMOTE_CONTROL_ENABLED": False,
    "LOG_LEVEL": "DEBUG",
    "CONCURRENT_REQUESTS": 32,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    "DOWNLOAD_TIMEOUT": 10,
    "STICKY_PROXY_LOG_INTERVAL": 0,
}


@dataclass
class CrawlResult:
    crawler: Crawler
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, Any]:
        assert self.crawler.stats is not None
        return self.crawler.stats.get_stats()


async def crawl(
    spidercls: type, settings: dict[str, Any], **kwargs: Any
) -> CrawlResult:
    runner = CrawlerRunner({**BASE_SETTINGS, **settings})
    crawler = runner.create_crawler(spidercls)
    result = CrawlResult(crawler)
    crawler.signals.connect(
        lambda item: result.items.append(dict(item)),
        signal=signals.item_scraped,
        weak=False,
    )
    await maybe_deferred_to_future(runner.crawl(crawler, **kwargs))
    return result


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def pinning_sandbox() -> Iterator[Sandbox]:
    with Sandbox(pin_per_connection=True) as sb:
        yield sb


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    caplog.set_level(logging.DEBUG)
    yield (
        lambda: (
            caplog.text
            + "\n".join(str(r.exc_info) + r.getMessage() for r in caplog.records)
        )
    )


def assert_no_leak(
    secret: str, result: CrawlResult, text: str, sandbox: Sandbox
) -> None:
    """Invariant 4: the password is nowhere in logs, stats or items, and the
    target never received a Proxy-Authorization header."""
    assert secret not in text
    assert secret not in repr(result.stats)
    assert secret not in repr(result.items)
    assert not [hit for hit in sandbox.site.hits if hit.proxy_authorization]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the session: REDIS_URL, or a redis-server we start."""
    from .redis_server import RedisServer, external_url

    url = external_url()
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """The session's Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    yield redis_url
