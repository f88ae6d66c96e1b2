"""Proxy URLs as users give them (issue 13, items 7, 8 and 10): a JSON list
from the command line, ``https://`` proxies, credentials the
Proxy-Authorization encoding cannot carry."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from scrapy import Request
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import assert_absent, crawl
from .spiders import ItemsSpider, item_of

PW = "s3cret-pw"
P1 = f"http://u:{PW}@p1.example:3128"
P2 = "http://p2.example:3128"


def config(**values: Any) -> StickyProxyConfig:
    return StickyProxyConfig.from_settings(Settings(values))


def raises(setting: str, match: str, **values: Any) -> str:
    """The message of the ConfigError *values* raise, checked: it names
    *setting* first and holds no password."""
    with pytest.raises(ConfigError, match=match) as info:
        config(**values)
    message = str(info.value)
    assert message.startswith(f"{setting}: ")
    assert_absent(PW, message)
    return message


# -- item 7: STICKY_PROXY_LIST as text (-s, Scrapyd's -d setting=) -------------


@pytest.mark.parametrize(
    ("text", "weights"),
    [
        (f'["{P1}", "{P2}"]', [1.0, 1.0]),
        (f' {{"{P1}": 2, "{P2}": "0.5"}} ', [2.0, 0.5]),
        (f"{P1},{P2}", [1.0, 1.0]),  # what getlist users write
        (f"{P1}\n{P2}\n", [1.0, 1.0]),
    ],
    ids=["json-list", "json-object", "commas", "lines"],
)
def test_list_given_as_text(text: str, weights: list[float]) -> None:
    cfg = config(STICKY_PROXY_LIST=text)
    assert [p.id for p in cfg.static_proxies] == ["p1.example:3128", "p2.example:3128"]
    assert [p.weight for p in cfg.static_proxies] == weights
    assert cfg.secrets == (PW,)


@pytest.mark.parametrize(
    "text",
    [f'["{P1}",', f'{{"{P1}": }}', f"['{P1}']", "[" * 100_000],
    ids=["unterminated", "no-value", "single-quotes", "deep"],
)
def test_list_broken_json(text: str) -> None:
    message = raises("STICKY_PROXY_LIST", "not valid JSON", STICKY_PROXY_LIST=text)
    assert "credentials" not in message


def test_url_given_a_json_list() -> None:
    """One URL is expected: say so, rather than blame the credentials."""
    message = raises(
        "STICKY_PROXY_URL",
        r"starts with '\['.*STICKY_PROXY_LIST",
        STICKY_PROXY_URL=f'["{P1}"]',
    )
    assert "credentials" not in message


# -- item 8: https:// proxies ----------------------------------------------------


def test_https_proxy_urls_are_accepted() -> None:
    gateway = config(STICKY_PROXY_URL=f"https://u-{{session}}:{PW}@gw.example:8443")
    assert gateway.gateway is not None
    assert gateway.gateway.endpoint == "https://gw.example:8443"
    assert gateway.gateway.render("abc").startswith("https://u-abc:")
    static = config(STICKY_PROXY_LIST=[f"https://u:{PW}@p1.example:443", P2])
    endpoints = [p.template.endpoint for p in static.static_proxies]
    assert endpoints == ["https://p1.example:443", "http://p2.example:3128"]


class MixedSpider(ItemsSpider):
    """ItemsSpider over http, and one https page, which an https:// proxy
    cannot carry in Scrapy."""

    name = "mixed"

    def __init__(self, https_base: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.https_base = https_base
        self.failures: list[BaseException] = []

    async def start(self) -> AsyncIterator[Any]:
        async for request in super().start():
            yield request
        yield Request(f"{self.https_base}/item/0", errback=self.failed)

    def failed(self, failure: Any) -> None:
        self.failures.append(failure.value)


@pytest.fixture
def tls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(gateway_tls=True, pin_per_connection=True) as sb:
        yield sb


@deferred_f_from_coro_f
async def test_crawl_through_https_proxy(tls_sandbox: Sandbox, log_text: Any) -> None:
    """http:// pages go through the TLS gateway, each item and its follow-ups
    on one exit (the gateway pins exits per connection); the https:// page
    is refused at once with a true message and recorded."""
    sb = tls_sandbox
    assert sb.gateway_url.startswith("https://")
    n = 8
    settings = {"STICKY_PROXY_PROVIDER": "sandbox", "STICKY_PROXY_URL": sb.gateway_url}
    result = await crawl(
        MixedSpider, settings, base=sb.site_url, https_base=sb.site_https_url, n=n
    )

    assert sorted(i["item"] for i in result.items if i["part"] == "page") == list(
        range(n)
    )
    assert len([i for i in result.items if i["part"] != "page"]) == 3 * n
    exits: dict[int, set[str]] = {}
    for hit in sb.site.hits:
        item = item_of(hit.path)
        if item is not None:
            exits.setdefault(item, set()).add(hit.client_ip)
    assert all(len(seen) == 1 for seen in exits.values()), exits
    assert len({ip for seen in exits.values() for ip in seen}) == n
    # Every request reached the gateway as a proxied GET over TLS (it speaks
    # nothing else), with its session; no CONNECT was tried, the site saw no
    # https request, and (crawl() checks it) no Proxy-Authorization.
    assert len(sb.gateway.log) == 4 * n
    assert {(r.method, r.status) for r in sb.gateway.log} == {("GET", 200)}
    assert all(r.session for r in sb.gateway.log)
    assert not [h for h in sb.site.hits if h.scheme == "https"]

    spider = result.crawler.spider
    assert isinstance(spider, MixedSpider)
    [error] = spider.failures
    assert f"https:// proxy {sb.gateway_hostport}" in str(error)
    assert "http://" in str(error)
    assert result.stats["sticky_proxy/failed"] == 1
    assert "sticky_proxy/unproxied" not in result.stats
    assert "failed/NotSupported" in log_text()


# -- item 10: credentials HTTPPROXY_AUTH_ENCODING cannot encode -------------------

WIDE = "pä€ss"  # ä is Latin-1, € is not


@pytest.mark.parametrize(
    ("values", "setting", "part"),
    [
        (
            {"STICKY_PROXY_URL": f"http://u-{{session}}:{PW}{WIDE}@gw.example:8000"},
            "STICKY_PROXY_URL",
            "password",
        ),
        (
            {"STICKY_PROXY_URL": f"http://u-{{session}}:{PW}p%C3%A4%E2%82%AC@h:1"},
            "STICKY_PROXY_URL",
            "password",
        ),
        (
            {"STICKY_PROXY_URL": f"http://{WIDE}-{{session}}:{PW}@gw.example:8000"},
            "STICKY_PROXY_URL",
            "username",
        ),
        (
            {"STICKY_PROXY_LIST": [P2, f"http://u:{PW}{WIDE}@p3.example:1"]},
            "STICKY_PROXY_LIST",
            "password",
        ),
    ],
    ids=["password", "percent-encoded", "username", "list"],
)
def test_credentials_outside_auth_encoding(
    values: dict[str, Any], setting: str, part: str
) -> None:
    expected = f"the {part} .*HTTPPROXY_AUTH_ENCODING.*latin-1"
    message = raises(setting, expected, **values)
    assert_absent("€", message)
    assert_absent("%E2", message)
    # The user may say the provider takes UTF-8.
    cfg = config(**values, HTTPPROXY_AUTH_ENCODING="utf-8")
    template = cfg.gateway or cfg.static_proxies[-1].template
    header = template.authorization("abc", "utf-8")
    assert header is not None
    assert "€" in base64.b64decode(header.split()[1]).decode("utf-8")


def test_unknown_auth_encoding() -> None:
    raises(
        "HTTPPROXY_AUTH_ENCODING",
        "not a text encoding",
        STICKY_PROXY_URL=f"http://u-{{session}}:{PW}@gw.example:8000",
        HTTPPROXY_AUTH_ENCODING="no-such-codec",
    )
