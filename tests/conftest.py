from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import socket
import zlib

# Before Scrapy's CookiesMiddleware is imported: its tldextract instance
# would fetch the Public Suffix List from publicsuffix.org (a DNS query
# off this machine, then the download) the first time a site sets a
# cookie. Empty: it uses the copy tldextract ships with. Crawls in
# subprocesses (the example project, Scrapyd) inherit it.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scrapy import signals
from scrapy.crawler import Crawler, CrawlerRunner
from scrapy.utils.defer import maybe_deferred_to_future

from scrapy_sticky_proxy.sandbox import Sandbox, gateway

BASE_SETTINGS: dict[str, Any] = {
    "ADDONS": {"scrapy_sticky_proxy.Addon": 100},
    "TELNETCONSOLE_ENABLED": False,
    "REMOTE_CONTROL_ENABLED": False,
    "LOG_LEVEL": "DEBUG",
    "CONCURRENT_REQUESTS": 32,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    "DOWNLOAD_TIMEOUT": 10,
    "STICKY_PROXY_LOG_INTERVAL": 0,
    # With a fraction of exits banning at random, the default 5 re-rolls
    # lose an item once in about 1/0.2**6 = 15,625 (a test of 200 items in
    # about 1 run of 80); tests that count attempts set their own budget.
    "STICKY_PROXY_MAX_REROLLS": 20,
}


@dataclass
class CrawlResult:
    crawler: Crawler
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, Any]:
        assert self.crawler.stats is not None
        return self.crawler.stats.get_stats()


# Every sandbox a test starts, so that every crawl can be checked against
# every password in play (invariant 4), whichever test runs it.
STARTED: list[Sandbox] = []
OTHER_SECRETS = ("hunter2", "s3cret-pw")
_sandbox_start = Sandbox.start


def _tracked_start(self: Sandbox) -> Sandbox:
    STARTED.append(self)
    return _sandbox_start(self)


Sandbox.start = _tracked_start  # type: ignore[method-assign]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def crawl(
    spidercls: type, settings: dict[str, Any], **kwargs: Any
) -> CrawlResult:
    """Run one crawl; afterwards check that no password of any sandbox (or
    other test secret) reached its log records, tracebacks included, its
    stats or its items, and that no demo site saw Proxy-Authorization."""
    runner = CrawlerRunner({**BASE_SETTINGS, **settings})
    crawler = runner.create_crawler(spidercls)
    result = CrawlResult(crawler)
    crawler.signals.connect(
        lambda item: result.items.append(dict(item)),
        signal=signals.item_scraped,
        weak=False,
    )
    capture = _Capture()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    try:
        await maybe_deferred_to_future(runner.crawl(crawler, **kwargs))
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
    output = "\n".join(capture.lines) + repr(result.stats) + repr(result.items)
    # Short passwords (the sandbox's own tests use "pw") would match any text.
    secrets = {sb.password for sb in STARTED if len(sb.password) >= 8}
    for secret in secrets | set(OTHER_SECRETS):
        # A bool, so that a failure does not print the output (and secret).
        leaked = secret in output
        assert not leaked, "a password leaked into the crawl's output"
    # The header's credentials are base64: decode what follows "Basic".
    for found in _BASIC.findall(output):
        token = found[: len(found) - (len(found) % 4 == 1)]  # cut off mid-group
        decoded = base64.b64decode(token + "=" * (-len(token) % 4)).decode("latin-1")
        leaked = any(secret in decoded for secret in secrets | set(OTHER_SECRETS))
        assert not leaked, "a Proxy-Authorization value leaked into the crawl's output"
    for sb in STARTED:
        assert not [h for h in sb.site.hits if h.proxy_authorization]
    return result


_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/]{8,})")


@pytest.fixture(autouse=True)
def _exits_of_this_test(request: pytest.FixtureRequest, monkeypatch: Any) -> None:
    """Gateways number their exits on from a start of this test's own, taken
    from its id: which exits a test gets, and so which ones a ban_fraction
    rule bans, does not depend on which tests ran before it in the process
    (another order, another pytest-xdist worker). The numbering still goes
    on across the test's sandboxes, so no two of them share an exit."""
    start = zlib.crc32(request.node.nodeid.encode()) % 10_000 * 1_000
    monkeypatch.setattr(gateway, "_EXIT_INDEX", itertools.count(start))


@pytest.fixture
def refused_port() -> Iterator[Callable[[], int]]:
    """Gives ports of 127.0.0.1 that refuse connections until the test ends:
    bound here, never listening. A port that free_port() found free is any
    process's to take: a server of another pytest-xdist worker listened on
    one while a test crawled through it as a dead proxy."""
    held: list[socket.socket] = []

    def port() -> int:
        sock = socket.socket()
        held.append(sock)
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

    yield port
    for sock in held:
        sock.close()


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


def records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a STICKY_PROXY_GAVE_UP_FILE."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_absent(secret: str, text: str) -> None:
    """Assert *secret* is not in *text*, on a bool, so that a failure does
    not print the text (and the secret) into the test output."""
    found = secret in text
    assert not found, "a secret appears in the output"


def assert_no_leak(
    secret: str, result: CrawlResult, text: str, sandbox: Sandbox
) -> None:
    """Invariant 4: the password is nowhere in logs, stats or items, and the
    target never received a Proxy-Authorization header."""
    # Bools, so that a failure does not print the text (and the secret).
    in_log, in_stats = secret in text, secret in repr(result.stats)
    in_items = secret in repr(result.items)
    assert not (in_log or in_stats or in_items), (in_log, in_stats, in_items)
    assert not [hit for hit in sandbox.site.hits if hit.proxy_authorization]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the session: REDIS_URL, or a redis-server we start."""
    from .redis_server import RedisServer, external_url

    url = external_url()
    if url:
        # Tests empty it, and some pause the whole server: workers running
        # at once on one server would break each other's tests.
        if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
            pytest.fail("REDIS_URL is one server for all pytest-xdist workers: -n 0")
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
