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
from scrapy import Request
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

from .spiders import ItemsSpider
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
