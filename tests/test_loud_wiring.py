"""Issue 13 (items 1, 5, 6, 11): what the package does quietly, said out
loud. A handler that shares proxy connections between sessions is reported
at start; requests that carry their own proxy are counted and reported;
only None (or no key) means "no key"; a crawl the package closed for a
failure can exit non-zero."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy import StickyProxyMiddleware
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.inherit import StickyProxyInheritMiddleware as Inherit
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import crawl
from .test_crawl import settings_for

ROOT = Path(__file__).resolve().parent.parent
URL = "http://user-{session}:s3cret-pw@gw.example:8000"
STOCK = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
IMPERSONATE = "scrapy_impersonate.ImpersonateDownloadHandler"
OURS = "scrapy_sticky_proxy.StickyProxyDownloadHandler"
SHARED_OK = "STICKY_PROXY_ALLOW_SHARED_CONNECTIONS"


# -- item 1: a handler that shares proxy connections between sessions --------------


def start_warnings(caplog: pytest.LogCaptureFixture, **settings: Any) -> list[str]:
    """The warnings about shared connections that building a crawler (the
    addon included) and its middleware logs."""
    caplog.set_level(logging.WARNING)
    crawler = get_crawler(
        settings_dict={
            "ADDONS": {"scrapy_sticky_proxy.Addon": 100},
            "STICKY_PROXY_URL": URL,
            **settings,
        }
    )
    StickyProxyMiddleware.from_crawler(crawler)
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "connection" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("handlers", "named"),
    [
        # settings.py (or -s) beats the addon, which writes at addon priority
        ({"http": STOCK}, STOCK),
        # scrapy-impersonate sends requests without meta["impersonate"]
        # through Scrapy's stock pool
        ({"http": IMPERSONATE, "https": IMPERSONATE}, IMPERSONATE),
    ],
    ids=["stock", "impersonate"],
)
def test_a_handler_that_shares_connections_is_reported_once(
    caplog: pytest.LogCaptureFixture, handlers: dict[str, str], named: str
) -> None:
    [warning] = start_warnings(caplog, DOWNLOAD_HANDLERS=handlers)
    assert f"DOWNLOAD_HANDLERS: http: {named}" in warning
    assert "plain-http requests of different sessions may share a connection" in (
        warning
    )
    assert "pins the exit per connection" in warning
    assert SHARED_OK in warning
    # https tunnels of the stock pool are keyed by the credential: not named.
    assert "https:" not in warning


@pytest.mark.parametrize("handler", [STOCK, IMPERSONATE])
def test_shared_connections_can_be_accepted_deliberately(
    caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    handlers = {"http": handler, "https": handler}
    assert start_warnings(caplog, DOWNLOAD_HANDLERS=handlers, **{SHARED_OK: True}) == []


def test_our_handlers_are_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert start_warnings(caplog) == []  # the addon's
    impersonate = "scrapy_sticky_proxy.impersonate.StickyImpersonateDownloadHandler"
    handlers = {"http": impersonate, "https": OURS}
    assert start_warnings(caplog, DOWNLOAD_HANDLERS=handlers) == []


# -- items 5 and 6: requests with their own proxy; falsy keys ----------------------


class MetaSpider(Spider):
    """Requests /item/0 .. with the given metas; yields what each response's
    meta says."""

    name = "meta"

    def __init__(self, base: str, metas: list[dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.base = base
        self.metas = metas

    async def start(self) -> Any:
        for i, meta in enumerate(self.metas):
            yield Request(f"{self.base}/item/{i}", meta=meta)

    def parse(self, response: Response) -> Any:
        yield {
            "item": int(response.url.rsplit("/", 1)[1]),
            "client": response.css("#client::text").get(),
            "key": response.meta.get("sticky_proxy_key", "<absent>"),
        }


@deferred_f_from_coro_f
async def test_requests_with_their_own_proxy_are_counted_and_reported(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    own = {"proxy": sandbox.gateway_url}  # the user's, credentials and all
    metas = [own, {"proxy": None}, own, {}, {}]
    result = await crawl(
        MetaSpider, settings_for(sandbox), base=sandbox.site_url, metas=metas
    )
    assert len(result.items) == 5
    assert result.stats["sticky_proxy/user_proxy"] == 3
    assert result.stats["sticky_proxy/requests"] == 2
    said = [r for r in caplog.records if "own meta['proxy']" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert sandbox.site_url + "/item/0" in said[0].getMessage()
    summary = [m for r in caplog.records if "summary (" in (m := r.getMessage())]
    assert len(summary) == 1 and " user_proxy=3" in summary[0]
    # The middleware did not route them, so it wrote no key.
    by_item = {i["item"]: i for i in result.items}
    assert by_item[1]["client"] == "127.0.0.1"  # proxy None: sent direct
    assert [by_item[i]["key"] for i in (0, 1, 2)] == ["<absent>"] * 3


@deferred_f_from_coro_f
async def test_only_none_means_no_key(sandbox: Sandbox) -> None:
    keys: list[Any] = [0, 1, "", False, None, 0.0]
    metas = [{"sticky_proxy_key": key} for key in keys] + [{}]
    result = await crawl(
        MetaSpider, settings_for(sandbox), base=sandbox.site_url, metas=metas
    )
    got = {i["item"]: i["key"] for i in result.items}
    url = sandbox.site_url + "/item/"
    assert got == {
        0: "0",
        1: "1",
        2: "",
        3: "False",
        4: f"{url}4",
        5: "0.0",
        6: f"{url}6",
    }


@pytest.mark.parametrize("key", ["", "0"])
def test_follow_ups_inherit_an_empty_key_too(key: str) -> None:
    from scrapy.http import HtmlResponse

    from scrapy_sticky_proxy import StickyProxyInheritMiddleware

    crawler = get_crawler(
        settings_dict={"STICKY_PROXY_URL": URL, "STICKY_PROXY_INHERIT_KEY": True}
    )
    page = Request("http://t.example/item/1", meta={"sticky_proxy_key": key})
    response = HtmlResponse(page.url, request=page)
    middleware = StickyProxyInheritMiddleware(crawler)
    [follow_up] = middleware.process_spider_output(
        response, [Request("http://t.example/item/1/detail")]
    )
    assert follow_up.meta["sticky_proxy_key"] == key


# -- item 11: exit status ------------------------------------------------------------

SETTINGS_PY = """\
BOT_NAME = "exitproj"
SPIDER_MODULES = ["exitproj.spiders"]
ADDONS = {"scrapy_sticky_proxy.Addon": 100}
STICKY_PROXY_PROVIDER = "sandbox"
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
"""

SPIDER_PY = """\
from scrapy import Spider


class One(Spider):
    name = "one"

    def __init__(self, url, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [url]

    def parse(self, response):
        yield {"url": response.url}
"""


def scrapy_crawl(
    project: Path, sandbox: Sandbox, password: str = "wrong-password"
) -> subprocess.CompletedProcess[str]:
    proxy = f"http://{sandbox.username}:{password}@{sandbox.gateway_hostport}"
    url = f"url={sandbox.site_url}/item/1"
    setting = f"STICKY_PROXY_URL={proxy}"
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "one", "-a", url, "-s", setting],
        cwd=project,
        # This checkout's code, whatever an editable install points to.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(project)])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_crawl_closed_for_a_failure_can_exit_non_zero(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    package = tmp_path / "exitproj"
    (package / "spiders").mkdir(parents=True)
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = exitproj.settings\n")
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS_PY)
    (package / "spiders" / "__init__.py").write_text(SPIDER_PY)

    plain = scrapy_crawl(tmp_path, sandbox)
    assert "'finish_reason': 'sticky_proxy_auth_failed'" in plain.stderr, plain.stderr[
        -3000:
    ]
    assert plain.returncode == 0  # Scrapy's own behaviour, documented

    with (package / "settings.py").open("a") as settings:
        settings.write('COMMANDS_MODULE = "scrapy_sticky_proxy.commands"\n')
    strict = scrapy_crawl(tmp_path, sandbox)
    assert "'finish_reason': 'sticky_proxy_auth_failed'" in strict.stderr, (
        strict.stderr[-3000:]
    )
    assert strict.returncode == 1
    assert sandbox.site.hits == []
    # Only a failure: a crawl that finished exits with 0.
    fine = scrapy_crawl(tmp_path, sandbox, password=sandbox.password)
    assert "'finish_reason': 'finished'" in fine.stderr, fine.stderr[-3000:]
    assert fine.returncode == 0


# The manual wiring of docs/topics/configuration.md.
BY_HAND = {
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy_sticky_proxy.StickyProxyMiddleware": 690,
        "scrapy_sticky_proxy.cache.BanCacheGuard": 950,
        "scrapy_sticky_proxy.ledger.StickyProxyLedger": 10,
        "scrapy_sticky_proxy.auth.StickyProxyAuth": 999,
    },
    "EXTENSIONS": {"scrapy_sticky_proxy.StickyProxyStats": 500},
    "DOWNLOAD_HANDLERS": {"http": OURS, "https": OURS},
    "STICKY_PROXY_URL": URL,
}


def test_inherit_key_wired_by_hand_needs_its_spider_middleware() -> None:
    """Without StickyProxyInheritMiddleware, STICKY_PROXY_INHERIT_KEY did
    nothing, silently: a page's follow-ups left through other exits."""
    settings = {**BY_HAND, "STICKY_PROXY_INHERIT_KEY": True}
    crawler = get_crawler(settings_dict=settings)
    with pytest.raises(ConfigError, match=r"^STICKY_PROXY_INHERIT_KEY: needs SPIDER_"):
        StickyProxyMiddleware.from_crawler(crawler)
    for path in ("scrapy_sticky_proxy.StickyProxyInheritMiddleware", Inherit):
        with_it = {**settings, "SPIDER_MIDDLEWARES": {path: 600}}
        StickyProxyMiddleware.from_crawler(get_crawler(settings_dict=with_it))
    StickyProxyMiddleware.from_crawler(get_crawler(settings_dict=BY_HAND))
