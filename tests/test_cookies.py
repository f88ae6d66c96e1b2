"""Cookies per session (issue 14.1): a site that binds its cookie to the
client address and bans a cookie presented from another one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy._wiring import check_middleware_order
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.sandbox import Sandbox
from scrapy_sticky_proxy.sandbox.ban_rules import IP_COOKIE, foreign_ip_cookie
from scrapy_sticky_proxy.state.redis_cookies import decode, encode, redis_key

from .conftest import assert_absent, crawl
from .spiders import ItemsSpider, item_of
from .test_crawl import settings_for
from .test_redis_crawl import redis_settings


def first_page_request_banned() -> Any:
    """A ban rule: the first request for each item page is banned (403),
    so that every item is re-rolled exactly once."""
    seen: set[str] = set()

    def rule(client_ip: str, path: str) -> str | None:
        if item_of(path) is None or path.count("/") != 2 or path in seen:
            return None
        seen.add(path)
        return "403"

    return rule


def foreign(sandbox: Sandbox) -> list[Any]:
    """Requests that presented a cookie issued to another exit."""
    return [
        h
        for h in sandbox.site.hits
        if foreign_ip_cookie(h.client_ip, h.headers.get("cookie", ""))
    ]


def with_own_cookie(sandbox: Sandbox) -> list[Any]:
    return [
        h
        for h in sandbox.site.hits
        if f"{IP_COOKIE}={h.client_ip}" in h.headers.get("cookie", "")
    ]


@pytest.mark.parametrize("per_session", [True, False], ids=["jars", "one_jar"])
@deferred_f_from_coro_f
async def test_cookies_never_cross_exits(sandbox: Sandbox, per_session: bool) -> None:
    sandbox.site.ip_cookies = True
    sandbox.site.ban_rule = first_page_request_banned()
    settings = settings_for(
        sandbox,
        STICKY_PROXY_COOKIES_PER_SESSION=per_session,
        STICKY_PROXY_MAX_REROLLS=3,
        # One request at a time: the one shared jar always holds the cookie
        # of the last exit that answered.
        CONCURRENT_REQUESTS=1,
    )
    result = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=4)
    stats = result.stats
    rerolls = stats["sticky_proxy/rerolls"]
    if per_session:
        # Every banned exit's cookie (the 403 set one) stayed in its burned
        # jar; each re-roll started empty, and each page's follow-ups sent
        # the cookie their exit got.
        assert foreign(sandbox) == []
        assert len(result.items) == 16
        assert rerolls == stats["sticky_proxy/cookie_jars/dropped/burned"] == 4
        assert len(with_own_cookie(sandbox)) == 12
        assert stats["sticky_proxy/cookie_jars"] == 4
    else:
        # The banned exit's cookie follows the re-roll onto the fresh exit,
        # which is banned for it, and so on: every re-roll is banned.
        assert rerolls == 4 * 3
        assert len(foreign(sandbox)) >= rerolls
        assert stats["sticky_proxy/gave_up"] == 4
        assert result.items == []
        assert "sticky_proxy/cookie_jars" not in stats


@deferred_f_from_coro_f
async def test_a_burned_session_without_cookies_drops_no_jar(
    sandbox: Sandbox,
) -> None:
    """The site sets no cookie: CookiesMiddleware still made an empty jar
    for each session, and each ban counted one dropped."""
    sandbox.site.ban_rule = first_page_request_banned()
    settings = settings_for(sandbox, STICKY_PROXY_MAX_REROLLS=3)
    result = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=4)
    assert result.stats["sticky_proxy/rerolls"] == 4
    assert "sticky_proxy/cookie_jars/dropped/burned" not in result.stats


class PartsSpider(Spider):
    """Fetches URLs, each with the session key given."""

    name = "parts"

    def __init__(self, requests: list[tuple[str, str]], **kwargs: Any):
        super().__init__(**kwargs)
        self.requests = requests

    async def start(self) -> AsyncIterator[Any]:
        for url, key in self.requests:
            yield Request(url, meta={"sticky_proxy_key": key}, callback=self.parse)

    def parse(self, response: Response) -> dict[str, Any]:
        return {"url": response.url}


@deferred_f_from_coro_f
async def test_shared_cookies_reach_another_crawler(
    sandbox: Sandbox, redis_db: str
) -> None:
    # The first crawler fetches the pages, the others their follow-ups with
    # the pages' keys: same sessions, so same exits, but a CookiesMiddleware
    # of their own. Only Redis can hand them the cookies.
    sandbox.site.ip_cookies = True
    base = sandbox.site_url
    pages = [(f"{base}/item/{i}", f"page-{i}") for i in range(3)]
    parts = [(f"{base}/item/{i}/detail", f"page-{i}") for i in range(3)]
    shared = redis_settings(sandbox, redis_db, STICKY_PROXY_SHARE_COOKIES=True)
    first = await crawl(PartsSpider, shared, requests=pages)
    assert first.stats["sticky_proxy/cookie_jars/shared/saved"] == 3

    hits = sandbox.site.hits
    start = len(hits)
    alone = await crawl(PartsSpider, redis_settings(sandbox, redis_db), requests=parts)
    assert len(alone.items) == 3
    assert [h.headers.get("cookie") for h in hits[start:]] == [None] * 3

    start = len(hits)
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    client.config_resetstat()
    second = await crawl(PartsSpider, shared, requests=parts)
    assert len(second.items) == 3
    presented = [h.headers.get("cookie") for h in hits[start:]]
    assert sorted(presented) == sorted(f"{IP_COOKIE}={h.client_ip}" for h in hits[:3])
    assert foreign(sandbox) == []
    assert second.stats["sticky_proxy/cookie_jars/shared/loaded"] == 3
    # The cost: one GET per request, one SET per response that set a cookie
    # (besides the store's heartbeat SETs).
    calls = client.info("commandstats")
    assert calls["cmdstat_get"]["calls"] == 3
    assert second.stats["sticky_proxy/cookie_jars/shared/saved"] == 3
    names = client.keys("t:cookies:*")
    stored = [decode(client.get(name)) for name in names]
    assert len(stored) == 3 and all(c is not None and len(c) == 1 for c in stored)
    assert_absent(sandbox.password, repr([client.get(n) for n in client.keys("*")]))


@deferred_f_from_coro_f
async def test_hostile_shared_cookies_are_skipped(
    sandbox: Sandbox, redis_db: str
) -> None:
    sandbox.site.ip_cookies = True
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    base, route = sandbox.site_url, sandbox.gateway_hostport
    bad = [
        '[["exit","1.2.3.4\\r\\nX-Evil: 1","127.0.0.1","/",false,null,false]]',
        "[" * 100_000,
        '{"not": "a list"}',
    ]
    settings = redis_settings(sandbox, redis_db, STICKY_PROXY_SHARE_COOKIES=True)
    # The jar ids the sessions will have: written before the crawl.
    from scrapy_sticky_proxy.routing.ids import session_id
    from scrapy_sticky_proxy.routing.providers import get_preset

    rules = get_preset("sandbox").id_rules
    for i, value in enumerate(bad):
        jar = f"sticky_proxy/{route}/{session_id(f'k{i}', 0, rules)}"
        client.set(redis_key("t", jar), value)
    result = await crawl(
        PartsSpider,
        settings,
        requests=[(f"{base}/item/{i}", f"k{i}") for i in range(3)],
    )
    assert len(result.items) == 3
    assert result.stats["sticky_proxy/cookie_jars/shared/skipped"] == 3
    assert [h.headers.get("cookie") for h in sandbox.site.hits] == [None] * 3


def test_cookies_holding_a_password_are_not_shared() -> None:
    kept, leaky = decode(
        '[["a","1","example.com","/",false,null,false],'
        '["b","hunter2-x","example.com","/",false,null,false]]'
    ) or [None, None]
    assert encode([kept, leaky], ["hunter2"]) == encode([kept])
    assert encode([leaky], ["hunter2"]) is None


def test_cookie_values_read_back_are_checked() -> None:
    good = '[["sid","abc","example.com","/",true,1900000000,true]]'
    (cookie,) = decode(good) or []
    assert (cookie.name, cookie.value, cookie.secure) == ("sid", "abc", True)
    for raw in (
        '[["sid","a;b","example.com","/",false,null,false]]',  # ends the pair
        '[["s d","ab","example.com","/",false,null,false]]',
        '[["sid","ab","example.com","nopath",false,null,false]]',
        '[["sid","ab","example.com","/",1,null,false]]',
        '[["sid","ab","example.com","/",false,1e300,false]]',
        '[["sid","ab","example.com","/",false,NaN,false]]',
        '[["sid","' + "x" * 5000 + '","example.com","/",false,null,false]]',
        "[" + ",".join(['["a","b","c.com","/",false,null,false]'] * 65) + "]",
        b"[]",
        "not json",
    ):
        assert decode(raw) is None, raw


def test_the_order_cookies_per_session_need() -> None:
    ours = {
        "scrapy_sticky_proxy.StickyProxyMiddleware": 740,
        "scrapy_sticky_proxy.auth.StickyProxyAuth": 999,
        "scrapy_sticky_proxy.ledger.StickyProxyLedger": 10,
    }
    settings = Settings({"DOWNLOADER_MIDDLEWARES": ours})
    check_middleware_order(settings)  # without cookies per session
    with pytest.raises(ConfigError, match="CookiesMiddleware \\(700\\)"):
        check_middleware_order(settings, cookie_jars=True)
    ours["scrapy_sticky_proxy.StickyProxyMiddleware"] = 690
    settings = Settings({"DOWNLOADER_MIDDLEWARES": ours})
    check_middleware_order(settings, cookie_jars=True)
    with pytest.raises(ConfigError, match="StickyProxyCookieShare is missing"):
        check_middleware_order(settings, cookie_jars=True, share_cookies=True)
    ours["scrapy_sticky_proxy.cookies.StickyProxyCookieShare"] = 720
    settings = Settings({"DOWNLOADER_MIDDLEWARES": ours})
    with pytest.raises(ConfigError, match="before CookiesMiddleware"):
        check_middleware_order(settings, cookie_jars=True, share_cookies=True)


def test_the_order_message_shows_the_priorities_set() -> None:
    # CookiesMiddleware moved to 600: the message says 600 (not Scrapy's
    # default 700), and asks for a number below it (690 would not do).
    cookies = "scrapy.downloadermiddlewares.cookies.CookiesMiddleware"
    settings = Settings(
        {
            "DOWNLOADER_MIDDLEWARES": {
                "scrapy_sticky_proxy.StickyProxyMiddleware": 690,
                "scrapy_sticky_proxy.auth.StickyProxyAuth": 999,
                "scrapy_sticky_proxy.ledger.StickyProxyLedger": 10,
                cookies: 600,
            }
        }
    )
    with pytest.raises(ConfigError) as caught:
        check_middleware_order(settings, cookie_jars=True)
    message = str(caught.value)
    assert "CookiesMiddleware (600)" in message, message
    assert "(700)" not in message and "use 690" not in message, message
    assert "below 600" in message, message
    settings["DOWNLOADER_MIDDLEWARES"]["scrapy_sticky_proxy.StickyProxyMiddleware"] = (
        590
    )
    settings["DOWNLOADER_MIDDLEWARES"][
        "scrapy_sticky_proxy.cookies.StickyProxyCookieShare"
    ] = 695
    with pytest.raises(ConfigError) as caught:
        check_middleware_order(settings, cookie_jars=True, share_cookies=True)
    message = str(caught.value)
    assert "CookiesMiddleware (600)" in message and "(700)" not in message, message
    assert "between 590 and 600" in message, message
