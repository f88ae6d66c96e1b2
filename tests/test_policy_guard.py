"""A custom ban policy's answers are untrusted: its reasons name stats and go
into logs and give-up records, so they are redacted, kept on one line,
bounded in length and in number; an answer that is not a str is judged by
its truth. Real crawls through the sandbox."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy import BanPolicy
from scrapy_sticky_proxy._policy_guard import MAX_LENGTH, MAX_REASONS, OTHER

from .conftest import assert_absent, crawl, records
from .spiders import ItemsSpider
from .test_crawl import settings_for

if TYPE_CHECKING:
    from pathlib import Path

    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from scrapy_sticky_proxy.sandbox import Sandbox


class EchoPolicy(BanPolicy):
    """Bans every item page with a reason built carelessly: the page's URL
    (a new reason for each page), a line break, and the proxy's password
    (what a policy that prints a request's proxy or headers would give)."""

    password = ""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BanPolicy:
        policy = super().from_crawler(crawler)
        policy.password = urlsplit(crawler.settings["STICKY_PROXY_URL"]).password  # type: ignore[attr-defined]
        return policy

    def response_ban(self, response: Response) -> str | None:
        if "/item/" in response.url:
            return f"blocked {response.url}\nby {self.password} " + "x" * 200
        return super().response_ban(response)


class TruthPolicy(BanPolicy):
    """Answers False for "no ban" and True for item 3's page, as a user who
    did not read the docstring would. Notes every answer it gives."""

    asked: ClassVar[list[tuple[int, str]]] = []

    def response_ban(self, response: Response) -> Any:
        self.asked.append((id(self), response.url))
        return response.url.endswith("/item/3")


class EmptyPolicy(BanPolicy):
    """Answers "" for "no ban"."""

    def response_ban(self, response: Response) -> Any:
        return "captcha" if response.url.endswith("/item/3") else ""


class CutPolicy(EchoPolicy):
    """A reason whose password runs across the 64th character, after a
    space: redacted first, then cut, or a piece of it would be left."""

    def response_ban(self, response: Response) -> str | None:
        return "x" * 50 + f" {self.password} tail"


class LostPolicy(EchoPolicy):
    """A download error's reason with the password and a line break."""

    def exception_ban(self, exception: BaseException) -> str | None:
        return f"lost {type(exception).__name__}\n{self.password}"


@deferred_f_from_coro_f
async def test_a_policy_s_reasons_are_redacted_one_line_and_bounded(
    sandbox: Sandbox, tmp_path: Path, log_text: Any, caplog: Any
) -> None:
    gave_up = tmp_path / "gave_up.jsonl"
    n = MAX_REASONS + 8
    # crawl() fails if the password reaches the log, the stats or the items.
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.EchoPolicy",
            STICKY_PROXY_MAX_REROLLS=0,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        ),
        base=sandbox.site_url,
        n=n,
        follow=False,
    )
    stats = result.stats
    assert stats["sticky_proxy/bans"] == n
    assert stats["sticky_proxy/gave_up"] == n
    reasons = {k[len("sticky_proxy/bans/") :]: v for k, v in stats.items()}
    reasons = {k: v for k, v in reasons.items() if k.startswith(("blocked", OTHER))}
    # One stat per reason up to the bound, then every other one together.
    assert len(reasons) == MAX_REASONS + 1
    assert reasons[OTHER] == n - MAX_REASONS
    for reason in reasons:
        assert len(reason) <= MAX_LENGTH
        assert reason.isascii() and reason.isprintable() and " " not in reason
    assert any(r.startswith("blocked_http://127.0.0.1:") for r in reasons)
    got = records(gave_up)
    assert len(got) == n
    assert all(len(r["reasons"]) == 1 and r["reasons"][0] in reasons for r in got)
    text = gave_up.read_text() + log_text()
    assert_absent(sandbox.password, text)
    assert "by_***_xxx" in next(r for r in reasons if r != OTHER)
    many = [r for r in caplog.records if "different ban reasons" in r.getMessage()]
    assert len(many) == 1 and "STICKY_PROXY_BAN_POLICY" in many[0].getMessage()


@pytest.mark.parametrize(
    ("policy", "reason", "warned_of"),
    [
        ("TruthPolicy", "policy/bool", "type bool"),
        ("EmptyPolicy", "captcha", "type str"),
    ],
)
@deferred_f_from_coro_f
async def test_a_false_answer_is_no_ban(
    sandbox: Sandbox, caplog: Any, policy: str, reason: str, warned_of: str
) -> None:
    caplog.set_level(logging.WARNING)
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.{policy}",
            STICKY_PROXY_MAX_REROLLS=0,
        ),
        base=sandbox.site_url,
        n=6,
    )
    stats = result.stats
    # Every other page and its follow-ups are items (before: none at all).
    assert len(result.items) == 5 * 4
    assert stats["sticky_proxy/bans"] == 1
    assert stats[f"sticky_proxy/bans/{reason}"] == 1
    warned = [r.getMessage() for r in caplog.records if warned_of in r.getMessage()]
    assert len(warned) == 1
    assert "STICKY_PROXY_BAN_POLICY" in warned[0]


@deferred_f_from_coro_f
async def test_with_the_http_cache_each_copy_sees_a_response_once(
    sandbox: Sandbox, tmp_path: Path, caplog: Any
) -> None:
    """The cache guard asks a policy of its own, so a policy that keeps
    state sees each response once; a page it answers False for is cached."""
    caplog.set_level(logging.WARNING)
    TruthPolicy.asked = []
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    settings = settings_for(
        sandbox,
        STICKY_PROXY_BAN_POLICY=f"{__name__}.TruthPolicy",
        STICKY_PROXY_MAX_REROLLS=0,
        **cache,
    )
    first = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=6, follow=False)
    assert len(first.items) == 5
    asked = TruthPolicy.asked
    assert len(asked) == 2 * 6 and len(set(asked)) == len(asked)
    assert len({who for who, _ in asked}) == 2
    # One warning, from the middleware's copy.
    assert len([r for r in caplog.records if "type bool" in r.getMessage()]) == 1
    second = await crawl(
        ItemsSpider, settings, base=sandbox.site_url, n=6, follow=False
    )
    assert second.stats["httpcache/hit"] == 5  # item 3's ban page was not kept


@deferred_f_from_coro_f
async def test_a_reason_is_redacted_before_it_is_cut(sandbox: Sandbox) -> None:
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.CutPolicy",
            STICKY_PROXY_MAX_REROLLS=0,
        ),
        base=sandbox.site_url,
        n=2,
        follow=False,
    )
    bans = [k for k in result.stats if k.startswith("sticky_proxy/bans/")]
    assert bans == ["sticky_proxy/bans/" + "x" * 50 + "_***_tail"]


@deferred_f_from_coro_f
async def test_a_download_error_s_reason_is_cleaned(sandbox: Sandbox) -> None:
    # Through a tunnel, the site's reset reaches the crawler as an error.
    sandbox.site.ban_rule = lambda ip, path: "reset" if "/item/" in path else None
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.LostPolicy",
            STICKY_PROXY_MAX_REROLLS=0,
            RETRY_ENABLED=False,
        ),
        base=sandbox.site_https_url,
        n=2,
        follow=False,
    )
    bans = {k for k in result.stats if k.startswith("sticky_proxy/bans/")}
    assert bans and all(k.endswith("_***") and "\n" not in k for k in bans), bans
    assert all(k.startswith("sticky_proxy/bans/lost_") for k in bans), bans
