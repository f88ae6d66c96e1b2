"""Smaller features, each through a real crawl or the pure policy."""

from __future__ import annotations

from typing import Any

from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.http import HtmlResponse, Request, Response
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from twisted.internet.error import ConnectionRefusedError

from scrapy_sticky_proxy import BanPolicy
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.sandbox import Sandbox

from .conftest import crawl
from .spiders import ItemsSpider, hooked
from .test_crawl import exits_by_item, settings_for


class Item7IsBanned(BanPolicy):
    """A custom policy: keeps the defaults and adds a rule of its own."""

    def response_ban(self, response: Response) -> str | None:
        if b"<h1>Item 7</h1>" in response.body:
            return "custom/item7"
        return super().response_ban(response)


def policy(**values: Any) -> BanPolicy:
    values.setdefault("STICKY_PROXY_URL", "http://u-{session}:pw@gw.example:1")
    return BanPolicy.from_config(StickyProxyConfig.from_settings(Settings(values)))


def response(status: int = 200, body: bytes = b"ok") -> HtmlResponse:
    return HtmlResponse("http://t.example/", status=status, body=body)


def test_default_policy() -> None:
    p = policy()
    assert p.response_ban(response(403)) == "status/403"
    assert p.response_ban(response(429)) == "status/429"
    assert p.response_ban(response(404)) is None
    assert p.response_ban(response(200, b"g-recaptcha")) is None
    # A refused CONNECT is the gateway's word about the target, not the exit.
    assert p.exception_ban(TunnelError("x")) is None
    # A refused connection is the gateway's problem, not the exit's.
    assert p.exception_ban(ConnectionRefusedError()) is None


def test_patterns_and_statuses() -> None:
    p = policy(
        STICKY_PROXY_BAN_STATUSES=[403, 503],
        STICKY_PROXY_BAN_PATTERNS=["g-recaptcha", r"Access\s+denied"],
    )
    assert p.response_ban(response(503)) == "status/503"
    assert p.response_ban(response(429)) is None
    assert p.response_ban(response(200, b"<div class=g-recaptcha>")) == "pattern/0"
    assert p.response_ban(response(200, b"Access   denied")) == "pattern/1"
    # Patterns only apply to successful pages, not to a 404's text.
    assert p.response_ban(response(404, b"Access denied")) is None


@deferred_f_from_coro_f
async def test_custom_ban_policy_in_a_crawl(sandbox: Sandbox) -> None:
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.Item7IsBanned",
            STICKY_PROXY_MAX_REROLLS=2,
        ),
        base=sandbox.site_url,
        n=10,
        follow=False,
    )
    assert sorted(i["item"] for i in result.items) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    stats = result.stats
    assert stats["sticky_proxy/bans/custom/item7"] == 3
    assert stats["sticky_proxy/gave_up"] == 1


@deferred_f_from_coro_f
async def test_follow_ups_inherit_the_key(sandbox: Sandbox) -> None:
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, STICKY_PROXY_INHERIT_KEY=True),
        base=sandbox.site_url,
        n=30,
        pass_key=False,
    )
    assert len(result.items) == 120
    seen = exits_by_item(sandbox)
    assert len(seen) == 30 and all(len(e) == 1 for e in seen.values())


@deferred_f_from_coro_f
async def test_without_inheritance_follow_ups_get_their_own_exit(
    sandbox: Sandbox,
) -> None:
    """The control for the test above: it can fail."""
    await crawl(
        ItemsSpider, settings_for(sandbox), base=sandbox.site_url, n=5, pass_key=False
    )
    assert all(len(e) == 4 for e in exits_by_item(sandbox).values())


@deferred_f_from_coro_f
async def test_meta_switches(sandbox: Sandbox) -> None:
    """dont_sticky_proxy and a user-set proxy are left alone; an explicit key
    and a per-request re-roll limit are honoured."""
    from scrapy import Spider

    class MetaSpider(Spider):
        name = "meta"

        async def start(self) -> Any:
            base = sandbox.site_url
            yield Request(f"{base}/item/1", meta={"dont_sticky_proxy": True})
            yield Request(f"{base}/item/2", meta={"proxy": None})
            yield Request(f"{base}/item/3", meta={"sticky_proxy_key": "shared"})
            yield Request(f"{base}/item/4", meta={"sticky_proxy_key": "shared"})
            yield Request(
                f"{base}/item/5",
                meta={"sticky_proxy_max_rerolls": 0, "sticky_proxy_key": "doomed"},
            )

        def parse(self, response: Response) -> Any:
            yield {
                "path": response.url.split("/", 3)[3],
                "client": response.css("#client::text").get(),
                "session": response.meta.get("sticky_proxy_session"),
            }

    sandbox.site.ban_rule = lambda ip, path: "403" if path == "/item/5" else None
    result = await crawl(MetaSpider, settings_for(sandbox))
    by_path = {i["path"]: i for i in result.items}
    assert set(by_path) == {"item/1", "item/2", "item/3", "item/4"}
    assert by_path["item/1"]["client"] == "127.0.0.1"
    assert by_path["item/2"]["client"] == "127.0.0.1"
    assert by_path["item/1"]["session"] is None
    assert by_path["item/3"]["client"] == by_path["item/4"]["client"] != "127.0.0.1"
    assert by_path["item/3"]["session"] == "shared"
    assert result.stats["sticky_proxy/gave_up"] == 1
    assert result.stats.get("sticky_proxy/rerolls", 0) == 0


@deferred_f_from_coro_f
async def test_dont_sticky_proxy_on_a_copy_of_a_routed_meta(sandbox: Sandbox) -> None:
    """A follow-up built from ``{**response.meta, "dont_sticky_proxy": True}``
    goes straight to the site: before, it kept the gateway URL we had put in
    meta (without credentials) and got the gateway's 407. A proxy of the
    user's own in such a meta is still left alone."""
    from scrapy import Spider

    class CopySpider(Spider):
        name = "copy"

        async def start(self) -> Any:
            yield Request(f"{sandbox.site_url}/item/1", callback=self.page)

        def page(self, response: Response) -> Any:
            base = sandbox.site_url
            meta = {**response.meta, "dont_sticky_proxy": True}
            yield response.follow(f"{base}/item/2", meta=meta, callback=self.part)
            own = {**meta, "proxy": sandbox.gateway_url}  # the user's, with login
            yield response.follow(f"{base}/item/3", meta=own, callback=self.part)
            yield {"path": "item/1", "client": self.client(response)}

        def part(self, response: Response) -> Any:
            path = response.url.split("/", 3)[3]
            yield {"path": path, "client": self.client(response)}

        @staticmethod
        def client(response: Response) -> Any:
            return (response.status, response.css("#client::text").get())

    result = await crawl(CopySpider, settings_for(sandbox, HTTPERROR_ALLOW_ALL=True))
    by_path = {i["path"]: i["client"] for i in result.items}
    assert by_path["item/2"] == (200, "127.0.0.1")
    assert by_path["item/1"][0] == by_path["item/3"][0] == 200
    assert "127.0.0.1" != by_path["item/3"][1] != by_path["item/1"][1]
    assert result.stats.get("sticky_proxy/user_proxy") is None


@deferred_f_from_coro_f
async def test_close_summary_is_logged(sandbox: Sandbox, log_text: Any) -> None:
    await crawl(ItemsSpider, settings_for(sandbox), base=sandbox.site_url, n=3)
    assert "Sticky proxy summary (finished): requests=12 " in log_text()


@deferred_f_from_coro_f
async def test_connection_pool_stays_bounded(sandbox: Sandbox) -> None:
    """One session per URL must not grow the pool: idle connections are capped
    and the per-session keys of closed connections are dropped."""
    from scrapy import signals

    from scrapy_sticky_proxy.handler import SessionKeyedPool

    peaks = {"idle": 0, "keys": 0}
    runner_settings = settings_for(sandbox, STICKY_PROXY_POOL_MAX_IDLE=5)

    def measure(response: Response, request: Request, spider: Any) -> None:
        handlers = spider.crawler.engine.downloader.handlers
        pool = handlers._get_handler("http")._pool
        assert isinstance(pool, SessionKeyedPool)
        peaks["idle"] = max(peaks["idle"], pool.idle_connections)
        peaks["keys"] = max(peaks["keys"], pool.pool_keys)

    Measured = hooked(signals.response_received, measure)
    result = await crawl(Measured, runner_settings, base=sandbox.site_url, n=60)
    assert len(result.items) == 240
    # 60 sessions, each kept its connection alive; at most 5 stayed idle.
    assert len({h.client_ip for h in sandbox.site.hits}) == 60
    assert 1 <= peaks["idle"] <= 5
    assert peaks["keys"] <= 5 + 32  # idle ones plus those in use (concurrency)


def test_bad_pool_cap(sandbox: Sandbox) -> None:
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy import ConfigError, StickyProxyDownloadHandler

    crawler = get_crawler(settings_dict={"STICKY_PROXY_POOL_MAX_IDLE": "lots"})
    try:
        StickyProxyDownloadHandler(crawler)
    except ConfigError as exc:
        assert str(exc).startswith("STICKY_PROXY_POOL_MAX_IDLE: ")
    else:
        raise AssertionError("no error")


@deferred_f_from_coro_f
async def test_a_non_string_key_is_used_as_text(sandbox: Sandbox) -> None:
    from scrapy import Spider

    class IntKeys(Spider):
        name = "intkeys"

        async def start(self) -> Any:
            for i in (1, 2):
                yield Request(
                    f"{sandbox.site_url}/item/{i}", meta={"sticky_proxy_key": 42}
                )

        def parse(self, response: Response) -> Any:
            yield {
                "client": response.css("#client::text").get(),
                "key": response.meta["sticky_proxy_key"],
            }

    result = await crawl(IntKeys, settings_for(sandbox))
    assert [i["key"] for i in result.items] == ["42", "42"]
    assert len({i["client"] for i in result.items}) == 1


@deferred_f_from_coro_f
async def test_proactive_rotation_by_uses(sandbox: Sandbox) -> None:
    """Each item page and its 3 follow-ups share a key: with max 2 uses per
    session, the key rotates once, without a ban."""
    result = await crawl(
        ItemsSpider,
        settings_for(sandbox, STICKY_PROXY_SESSION_MAX_USES=2),
        base=sandbox.site_url,
        n=10,
    )
    assert len(result.items) == 40
    assert result.stats["sticky_proxy/rotations"] == 10
    assert result.stats.get("sticky_proxy/bans", 0) == 0
    assert all(len(e) == 2 for e in exits_by_item(sandbox).values())


@deferred_f_from_coro_f
async def test_progress_line(sandbox: Sandbox, log_text: Any) -> None:
    from scrapy_sticky_proxy import StickyProxyStats

    result = await crawl(ItemsSpider, settings_for(sandbox), base=sandbox.site_url, n=2)
    extension = next(
        e
        for e in result.crawler.extensions.middlewares
        if isinstance(e, StickyProxyStats)
    )
    extension.log_progress()
    assert "Sticky proxy: requests=8 tracked_keys=0 bans=0 rerolls=0" in log_text()
