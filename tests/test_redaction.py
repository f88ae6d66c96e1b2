"""The password in every form a message can write it (a reviewer's hunt,
issue 16's fifth round): each case here leaked before."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from scrapy import Request, Spider
from scrapy.http import JsonRequest
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy import StickyProxyMiddleware
from scrapy_sticky_proxy._records import give_up_record
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.state.redis_layout import redact_url

from .conftest import BASE_SETTINGS

PW = 'pä ss w"rd\\1'  # non-ASCII, a space, a quote, a backslash
URL = f"http://user-{{session}}:{quote(PW, safe='')}@127.0.0.1:8000"


def config(**values: Any) -> StickyProxyConfig:
    return StickyProxyConfig.from_settings(
        Settings({"STICKY_PROXY_PROVIDER": "generic", **values})
    )


@pytest.mark.parametrize(
    "written",
    [
        PW,
        repr(PW)[1:-1],
        ascii(PW)[1:-1],
        json.dumps(PW)[1:-1],
        json.dumps(PW, ensure_ascii=False)[1:-1],
        quote(PW, safe=""),
        quote(PW, safe="").lower(),
        quote_plus(PW),
        repr(PW.encode())[2:-1],
        PW.encode().decode("latin-1"),
    ],
    ids=["as-is", "repr", "ascii", "json", "json-utf8", "percent", "percent-lower",
         "plus", "bytes-repr", "utf8-as-latin1"],
)  # fmt: skip
def test_every_form_of_the_password_is_redacted(written: str) -> None:
    """Before: only the password as written and its repr() forms."""
    text = config(STICKY_PROXY_URL=URL).redact(f"<{written}>")
    assert text == "<***>", text


def test_a_password_inside_another_is_redacted_whole() -> None:
    """Each static proxy's forms came in turn: "abc" replaced first left
    the rest of "abcdef-LONGSECRET" in the text."""
    cfg = config(
        STICKY_PROXY_LIST=[
            "http://u:abc@127.0.0.1:1",
            "http://u:abcdef-LONGSECRET@127.0.0.1:2",
        ]
    )
    assert cfg.redact("x abcdef-LONGSECRET y") == "x *** y"


def test_the_password_after_a_placeholder_is_redacted() -> None:
    """Only the password's text before its first placeholder was a secret."""
    cfg = config(STICKY_PROXY_URL="http://user:pw{session}-TAILSECRET99@127.0.0.1:8000")
    assert "TAILSECRET99" not in cfg.redact("pwabc-TAILSECRET99")
    cfg = config(STICKY_PROXY_URL="http://user:x{session}REALPASS@127.0.0.1:8000")
    assert cfg.redact("x marks REALPASS") == "x marks ***"  # not every "x"


def test_a_key_given_as_the_login_is_redacted() -> None:
    """``http://KEY:@host`` (a key for a login, no password) had no secret."""
    cfg = config(STICKY_PROXY_LIST=["http://APIKEY123456:@127.0.0.1:1"])
    assert cfg.redact("key APIKEY123456") == "key ***"


@pytest.mark.parametrize(
    "url",
    [
        "http://u:hunter22@10.0.0.1:80",
        "u:hunter22@10.0.0.1:80",  # no scheme
        "http://u:hun@ter22@10.0.0.1:80",  # a raw "@" in the password
        "http://u:hunter'22@10.0.0.1:80",  # repr() then quotes with "
        "http://hunter22hunter22:@10.0.0.1:80",  # a key for a login
    ],
)
def test_a_config_error_does_not_quote_a_proxy_url(url: str) -> None:
    """A tier written as a dict of weights quoted its URL, password and all
    (then, a second reviewer: any URL the first pattern did not expect)."""
    with pytest.raises(ConfigError) as info:
        config(STICKY_PROXY_TIERS=[{url: 1}])
    assert "ter22" not in str(info.value) and "<a URL>" in str(info.value)


def test_an_ordinary_word_is_no_secret() -> None:
    """A login ``user:`` made "user" a secret: a give-up record's URL
    ``/user/42`` became ``/***/42``. A key is long and has no placeholder."""
    for url in ("http://user:@127.0.0.1:1", "http://user-{session}:@127.0.0.1:1"):
        cfg = config(STICKY_PROXY_LIST=[url])
        record = give_up_record(
            Request("https://shop.example/user-reviews/user/42"), [], cfg.redact
        )
        assert record["url"] == "https://shop.example/user-reviews/user/42"


def test_a_give_up_record_redacts_every_body() -> None:
    """A JSON body wrote the password JSON-escaped; a body that is not
    UTF-8 went into the record as base64, unredacted."""
    cfg = config(STICKY_PROXY_URL=URL)
    request = JsonRequest("http://shop.example/", data={"pw": PW})
    record = give_up_record(request, ["x"], cfg.redact)
    assert record["body"] == '{"pw": "***"}'
    body = b"\xff " + PW.encode()
    request = Request("http://shop.example/", method="POST", body=body)
    record = give_up_record(request, ["x"], cfg.redact)
    assert base64.b64decode(record["body"]) == b"\xff ***"


def test_a_redis_password_in_the_query_is_redacted() -> None:
    """redis-py takes ``?password=``; the status command printed it."""
    url = "redis://127.0.0.1:1/0?db=0&password=RedisPw123"
    assert redact_url(url) == "redis://127.0.0.1:1/0?db=0&password=***"
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"


@deferred_f_from_coro_f
async def test_a_url_with_the_password_in_the_user_proxy_line_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line said once for a request with its own meta["proxy"] showed
    the request's URL unredacted."""
    caplog.set_level(logging.INFO)
    crawler = get_crawler(Spider, {**BASE_SETTINGS, "STICKY_PROXY_URL": URL})
    crawler.spider = Spider("user_proxy")
    mw = StickyProxyMiddleware(crawler)
    url = f"http://shop.example/login?pw={quote(PW, safe='')}"
    await mw.process_request(Request(url, meta={"proxy": "http://127.0.0.1:1"}))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "left alone" in text and "***" in text, text


@pytest.mark.parametrize("password", ["correct horse", "tab\there", "S3cret-pw"])
def test_a_tier_written_as_url_and_weight_is_refused_without_its_password(
    password: str,
) -> None:
    """{URL: weight}, as STICKY_PROXY_LIST takes it, as a tier: the key was
    quoted in the error, and a password with a space escaped the hiding."""
    url = f"http://user:{password}@127.0.0.1:8000"
    settings = Settings({"STICKY_PROXY_TIERS": [{url: 1}]})
    with pytest.raises(ConfigError) as info:
        StickyProxyConfig.from_settings(settings)
    assert "{'url': URL}" in str(info.value)
    assert password not in str(info.value) and password not in repr(info.value)


def test_repr_of_a_config_shows_no_secret() -> None:
    """A BanPolicy of the user's is built from the config, and may log it."""
    config = StickyProxyConfig.from_settings(
        Settings(
            {
                "STICKY_PROXY_URL": URL,
                "STICKY_PROXY_BACKEND": "redis",
                "STICKY_PROXY_REDIS_URL": "redis://:redis-pw-1@127.0.0.1:1/0",
                "REDIS_PARAMS": {"password": "redis-pw-2"},
            }
        )
    )
    text = repr(config)
    for secret in (PW, quote(PW, safe=""), "redis-pw-1", "redis-pw-2"):
        assert secret not in text
