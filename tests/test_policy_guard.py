"""A custom ban policy's answers are untrusted: its reasons name stats and go
into logs and give-up records, so they are redacted, kept on one line,
bounded in length and in number; an answer that is not a str is judged by
its truth. Real crawls through the sandbox."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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
    did not read the docstring would."""

    def response_ban(self, response: Response) -> Any:
        return response.url.endswith("/item/3")


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


@deferred_f_from_coro_f
async def test_a_policy_answering_true_or_false_is_taken_at_its_word(
    sandbox: Sandbox, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    result = await crawl(
        ItemsSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_BAN_POLICY=f"{__name__}.TruthPolicy",
            STICKY_PROXY_MAX_REROLLS=0,
        ),
        base=sandbox.site_url,
        n=6,
    )
    stats = result.stats
    # False is no ban: every other page and its follow-ups are items.
    assert len(result.items) == 5 * 4
    assert stats["sticky_proxy/bans"] == 1
    assert stats["sticky_proxy/bans/policy/bool"] == 1
    assert "sticky_proxy/bans/False" not in stats
    assert "sticky_proxy/bans/True" not in stats
    warned = [
        r.getMessage() for r in caplog.records if "returned a bool" in r.getMessage()
    ]
    assert len(warned) == 1
    assert "STICKY_PROXY_BAN_POLICY" in warned[0]
