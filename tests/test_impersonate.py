"""scrapy-impersonate (curl_cffi) behind StickyImpersonateDownloadHandler.

The matrix of issue 18, part 4: items with follow-ups through a gateway that
pins the exit per TCP connection, 20 % of exits banned, http and https, with
``meta["impersonate"]`` on every request, on none, and on some. Every item's
page and follow-ups leave through one exit, every ban is re-rolled, nothing
is lost, no request goes direct, and (``crawl()`` checks it) the password
is in no log, stat or item and the demo site never saw Proxy-Authorization.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.http import Response
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

from .conftest import assert_no_leak
from .spiders import ItemsSpider, at_counts
from .test_crawl import exits_by_item, settings_for
from .test_gates import crawl_within

HANDLER = "scrapy_sticky_proxy.impersonate.StickyImpersonateDownloadHandler"
N = 30  # items, each with three follow-ups
DEADLINE = 60  # seconds a crawl may take before the test fails
PARTS = ("page", "detail", "media", "thumb")


def impersonated(mode: str, item: int, part: str) -> bool:
    if mode == "mixed":  # half the pages, and in each item some follow-ups
        return (item + PARTS.index(part)) % 2 == 0
    return mode == "all"


class ImpersonatingSpider(ItemsSpider):
    """ItemsSpider asking for curl_cffi (as Chrome) on the requests *mode*
    says, and recording on each item whether curl fetched it."""

    name = "impersonating"

    def __init__(self, *args: Any, mode: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mode = mode

    def _with(self, request: Request, item: int, part: str) -> Request:
        if not impersonated(self.mode, item, part):
            return request
        # The demo site's certificate is self-signed; Scrapy's handler does
        # not verify certificates either.
        extra = {"impersonate": "chrome", "impersonate_args": {"verify": False}}
        return request.replace(meta={**request.meta, **extra})

    async def start(self) -> AsyncIterator[Any]:
        async for request in super().start():
            yield self._with(request, int(request.url.rsplit("/", 1)[1]), "page")

    def parse_item(self, response: Response) -> Iterator[Any]:
        item = int(response.url.rsplit("/", 1)[1])
        for out in super().parse_item(response):
            if isinstance(out, Request):
                yield self._with(out, item, out.url.rsplit("/", 1)[1])
            else:
                yield {**out, "curl": "impersonate" in response.flags}

    def parse_part(self, response: Response) -> dict[str, Any]:
        return {**super().parse_part(response), "curl": "impersonate" in response.flags}


@pytest.mark.parametrize("mode", ["all", "none", "mixed"])
@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_sticky_with_and_without_impersonate(
    pinning_sandbox: Sandbox, scheme: str, mode: str
) -> None:
    sandbox = pinning_sandbox
    rule = ban_fraction(0.2)
    sandbox.site.ban_rule = rule
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    settings = settings_for(
        sandbox, DOWNLOAD_HANDLERS={"http": HANDLER, "https": HANDLER}
    )
    result = await crawl_within(
        DEADLINE, ImpersonatingSpider, settings, base=base, n=N, mode=mode
    )

    # Nothing lost: every page and follow-up made an item, fetched by curl
    # exactly when the spider asked for impersonation.
    got = sorted((i["item"], i["part"]) for i in result.items)
    assert got == sorted((i, p) for i in range(N) for p in PARTS)
    wrong = [
        i for i in result.items if i["curl"] != impersonated(mode, i["item"], i["part"])
    ]
    assert not wrong, wrong[:5]

    # Nothing went direct (127.0.0.1 is the crawler's own address), and each
    # item's page and follow-ups left through one exit.
    assert not [h for h in sandbox.site.hits if h.client_ip == "127.0.0.1"]
    seen = exits_by_item(sandbox, rule)
    assert set(seen) == set(range(N))
    split = {item: exits for item, exits in seen.items() if len(exits) > 1}
    assert not split, split

    # Every ban the site served was seen as one and re-rolled once.
    banned = [h for h in sandbox.site.hits if rule(h.client_ip, h.path)]
    assert banned
    stats = result.stats
    assert stats["sticky_proxy/bans"] == len(banned)
    assert stats["sticky_proxy/rerolls"] == len(banned)
    assert stats.get("sticky_proxy/gave_up", 0) == 0


def curl_settings(sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    handlers = {"http": HANDLER, "https": HANDLER}
    return settings_for(sandbox, DOWNLOAD_HANDLERS=handlers, **extra)


@deferred_f_from_coro_f
async def test_curl_waits_no_longer_than_download_timeout(sandbox: Sandbox) -> None:
    # curl_cffi's own timeout (30 s) used to replace DOWNLOAD_TIMEOUT, and
    # its Timeout was an error nothing in Scrapy knew: the requests were
    # dropped as unknown failures, half a minute each.
    sandbox.gateway_hang()
    result = await crawl_within(
        20,
        ImpersonatingSpider,
        curl_settings(sandbox, DOWNLOAD_TIMEOUT=1),
        base=sandbox.site_url,
        n=2,
        follow=False,
        mode="all",
    )
    stats = result.stats
    assert result.items == []
    timeouts = "downloader/exception_type_count/scrapy.exceptions.DownloadTimeoutError"
    assert stats.get(timeouts, 0) >= 2, stats
    # Nobody got an answer: the target is slow, not the exits banned.
    assert stats.get("sticky_proxy/target_timeouts", 0) >= 2
    assert stats.get("sticky_proxy/bans", 0) == 0


@deferred_f_from_coro_f
async def test_a_407_to_curls_connect_closes_the_crawl(
    sandbox: Sandbox, log_text: Any
) -> None:
    # curl reports a refused CONNECT as error 7 "CONNECT tunnel failed,
    # response 407": it used to fail each request on its own (150 CONNECTs
    # for 50 URLs, the crawl "finished").
    wrong = "wrong-" + sandbox.password
    url = sandbox.gateway_url.replace(sandbox.password, wrong)
    result = await crawl_within(
        DEADLINE,
        ImpersonatingSpider,
        curl_settings(sandbox, STICKY_PROXY_URL=url),
        base=sandbox.site_https_url,
        n=50,
        mode="all",
    )
    assert result.stats["finish_reason"] == "sticky_proxy_auth_failed"
    assert result.items == []
    assert len(sandbox.gateway.log) <= 5  # the credential probe, in practice
    text = log_text()
    assert "407" in text and sandbox.gateway_hostport in text
    assert_no_leak(wrong, result, text, sandbox)


class Outage(ImpersonatingSpider):
    """The gateway refuses connections for 1.2 s after the third item."""

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Any:
        spider = super().from_crawler(crawler, *args, **kwargs)
        sandbox: Sandbox = kwargs["sandbox"]

        def outage() -> None:
            sandbox.gateway_refuse()
            call_later(1.2, sandbox.gateway_normal)

        handler = at_counts({3: outage})
        crawler.signals.connect(handler, signal=signals.item_scraped, weak=False)
        return spider


@pytest.mark.parametrize("scheme", ["http", "https"])
@deferred_f_from_coro_f
async def test_a_gateway_outage_is_waited_out_through_curl(
    sandbox: Sandbox, scheme: str
) -> None:
    # curl's "couldn't connect" used to be an unknown error: each request
    # in flight or sent during the outage was lost instead of held back.
    base = sandbox.site_url if scheme == "http" else sandbox.site_https_url
    result = await crawl_within(
        DEADLINE,
        Outage,
        curl_settings(sandbox, CONCURRENT_REQUESTS=8),
        base=base,
        n=40,
        follow=False,
        mode="all",
        sandbox=sandbox,
    )
    assert len(result.items) == 40
    assert result.stats.get("sticky_proxy/outage_retries", 0) >= 1


def test_curl_errors_become_scrapys_and_name_no_credentials() -> None:
    from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
    from scrapy.core.downloader.handlers.http11 import TunnelError

    from scrapy_sticky_proxy.bans import UNREACHABLE, is_tunnel_407
    from scrapy_sticky_proxy.impersonate import scrapy_error

    refused = CurlConnectionError("curl: (7) CONNECT tunnel failed, response 407", 7)
    # A proxy URL with userinfo (not ours: a user's) names only host:port.
    error = scrapy_error(refused, "http://user:hunter2@10.0.0.1:8080")
    assert isinstance(error, TunnelError) and is_tunnel_407(error)
    assert "10.0.0.1:8080" in str(error) and "hunter2" not in str(error)
    down = CurlConnectionError("curl: (7) Failed to connect: Connection refused", 7)
    assert isinstance(scrapy_error(down, None), UNREACHABLE)
    # Not curl's, or a code Scrapy has no word for: left as it was.
    assert scrapy_error(OSError(7, "x"), None) is None
    assert scrapy_error(CurlConnectionError("curl: (35) TLS", 35), None) is None


REJECTED = [0, -1, float("inf"), float("nan"), True, "5", None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2.0), (0.5, 0.5), *((value, 9.0) for value in REJECTED)],
)
def test_only_a_finite_positive_timeout_reaches_curl(
    value: Any, expected: float
) -> None:
    from scrapy_sticky_proxy.impersonate import positive

    assert positive(value, 9.0) == expected
