"""No silent bypass (issue 18, part 1): a download handler that ignores
meta["proxy"] either stops the crawl at start, or, allowed, is reported at
run time; a crawl never counts as routed what went direct unsaid."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import crawl
from .spiders import ItemsSpider
from .test_crawl import settings_for

DIRECT = "tests.test_bypass.DirectHandler"
PLAYWRIGHT = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"


class DirectHandler(HTTP11DownloadHandler):
    """A handler that ignores meta["proxy"], as browser handlers do."""

    async def download_request(self, request: Request) -> Response:
        meta = {k: v for k, v in request.meta.items() if k != "proxy"}
        headers = request.headers.copy()
        headers.pop(b"Proxy-Authorization", None)
        direct = request.replace(meta=meta, headers=headers)
        return await super().download_request(direct)


@pytest.fixture
def far_sandbox() -> Iterator[Sandbox]:
    # The gateway on another loopback address than the site, so that where
    # a response came from tells proxied from direct.
    with Sandbox(gateway_host="127.0.0.2") as sb:
        yield sb


@pytest.mark.parametrize("handler", [DIRECT, PLAYWRIGHT])
@deferred_f_from_coro_f
async def test_a_handler_that_may_ignore_the_proxy_stops_the_crawl(
    far_sandbox: Sandbox, handler: str
) -> None:
    settings = settings_for(far_sandbox, DOWNLOAD_HANDLERS={"http": handler})
    with pytest.raises(ConfigError) as info:
        await crawl(ItemsSpider, settings, base=far_sandbox.site_url, n=4)
    message = str(info.value)
    assert message.startswith("DOWNLOAD_HANDLERS: http: ")
    assert handler in message and "STICKY_PROXY_ALLOW_HANDLERS" in message
    assert far_sandbox.site.hits == []


@deferred_f_from_coro_f
async def test_an_allowed_handler_that_goes_direct_is_reported(
    far_sandbox: Sandbox, log_text: Any
) -> None:
    settings = settings_for(
        far_sandbox,
        DOWNLOAD_HANDLERS={"http": DIRECT},
        STICKY_PROXY_ALLOW_HANDLERS=[DIRECT],
    )
    result = await crawl(
        ItemsSpider, settings, base=far_sandbox.site_url, n=6, follow=False
    )
    assert len(result.items) == 6
    # Every page reached the site from 127.0.0.1, not through an exit...
    assert {hit.client_ip for hit in far_sandbox.site.hits} == {"127.0.0.1"}
    # ... and the crawl says so: none of them counts as proxied silently.
    assert result.stats["sticky_proxy/unproxied"] == 6
    assert "sent it straight to the target" in log_text()


@deferred_f_from_coro_f
async def test_proxied_responses_are_not_reported(far_sandbox: Sandbox) -> None:
    result = await crawl(
        ItemsSpider,
        settings_for(far_sandbox),
        base=far_sandbox.site_url,
        n=6,
        follow=False,
    )
    assert len(result.items) == 6
    assert "sticky_proxy/unproxied" not in result.stats
    assert "127.0.0.1" not in {hit.client_ip for hit in far_sandbox.site.hits}
