"""Values no one should write, in every setting we read: a number past any
float (``10**400``), 5,000 digits of text, NUL, a lone surrogate, types
that are not settings. Each is taken, or stops the crawl with a
ConfigError naming the setting; never another exception. Before: an
OverflowError from ``math.isfinite(10**400)`` for every numeric setting,
a ValueError for 5,000 digits in STICKY_PROXY_BAN_STATUSES, a
UnicodeEncodeError for a surrogate in a ban pattern or STICKY_PROXY_GAVE_UP_FILE,
and REDIS_PARAMS refusing ``max_connections``, which the reference lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from scrapy.settings import Settings

from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.config.names import KNOWN_SETTINGS
from scrapy_sticky_proxy.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

URL = "http://user-{session}:s3cret-pw@127.0.0.1:9"
HOSTILE = [
    10**400,
    -(10**400),
    2**64,
    "9" * 5000,
    "1e400",
    "nan",
    "-1",
    "x\x00y",
    "\ud800",
    b"5",
    3 + 4j,
    object(),
    {"a": 1},
    [1],
    [10**400],
    ["9" * 5000],
    ["\ud800"],
    {"http://127.0.0.1:1": 10**400},
]


def config(**values: Any) -> StickyProxyConfig:
    values.setdefault("STICKY_PROXY_URL", URL)
    return StickyProxyConfig.from_settings(Settings(values))


@pytest.mark.parametrize("name", sorted(KNOWN_SETTINGS))
def test_a_hostile_value_is_taken_or_named(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # STICKY_PROXY_GAVE_UP_FILE = "-1" is a file
    for value in HOSTILE:
        try:
            config(**{name: value})
        except ConfigError as exc:
            assert name in str(exc), (value, str(exc))
        except Exception as exc:  # what the test is about
            pytest.fail(f"{name} = {value!r:.40}: {type(exc).__name__}: {exc}")


REDIS = {"STICKY_PROXY_BACKEND": "redis"}


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"REDIS_PARAMS": {"socket_timeout": 10**400}}, "REDIS_PARAMS"),
        # No timeout: a Redis that stops answering would hang the crawl.
        ({"REDIS_PARAMS": {"socket_timeout": None}}, "REDIS_PARAMS"),
        ({"REDIS_PARAMS": {"socket_connect_timeout": 1e-9}}, "REDIS_PARAMS"),
        ({"REDIS_PARAMS": {"max_connections": 10**400}}, "REDIS_PARAMS"),
        (
            {"STICKY_PROXY_REDIS_URL": "redis://127.0.0.1:6379/0?socket_timeout=0"},
            "STICKY_PROXY_REDIS_URL",
        ),
        ({"STICKY_PROXY_NAMESPACE": "ns\ud800"}, "STICKY_PROXY_NAMESPACE"),
        ({"COOKIES_ENABLED": "maybe"}, "COOKIES_ENABLED"),
        # Read by the ledger and the cache guard: Scrapy's ValueError named
        # neither (found by an audit).
        ({"HTTPCACHE_ENABLED": "maybe"}, "HTTPCACHE_ENABLED"),
        ({"SCHEDULER_PERSIST": "maybe"}, "SCHEDULER_PERSIST"),
        ({"METAREFRESH_ENABLED": "maybe"}, "METAREFRESH_ENABLED"),
        ({"REDIRECT_ENABLED": "maybe"}, "REDIRECT_ENABLED"),
    ],
    ids=lambda value: repr(value)[:60],
)
def test_redis_and_scrapy_values_that_would_fail_later(
    values: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config(**REDIS, **values)
    assert str(info.value).startswith(setting)


@pytest.mark.parametrize(
    "values",
    [
        {"REDIS_PARAMS": {"max_connections": 8}},
        {"REDIS_PARAMS": {"health_check_interval": 0}},
        {"STICKY_PROXY_REDIS_URL": "redis://127.0.0.1:6379/0?socket_timeout=2.5"},
        {"COOKIES_ENABLED": 2},  # as Scrapy reads it: True
    ],
    ids=repr,
)
def test_good_redis_values_pass(values: dict[str, Any]) -> None:
    config(**REDIS, **values)
