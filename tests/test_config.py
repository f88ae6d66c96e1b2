"""Every bad setting stops the crawl at start with an error naming it."""

from __future__ import annotations

from typing import Any

import pytest
from scrapy.settings import Settings

from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError

URL = "http://user-{session}:s3cret-pw@gw.example:8000"
PLAIN = "http://user:s3cret-pw@gw.example:8000"


def config(**values: Any) -> StickyProxyConfig:
    values.setdefault("STICKY_PROXY_URL", URL)
    return StickyProxyConfig.from_settings(Settings(values))


def sticky_key(request: Any) -> str:
    return "k"


NOT_CALLABLE = 42


@pytest.mark.parametrize(
    ("values", "setting", "message"),
    [
        ({"STICKY_PROXY_PROVIDER": "nosuch"}, "STICKY_PROXY_PROVIDER", "nosuch"),
        ({"STICKY_PROXY_URL": "http://user:pw@:8000"}, "STICKY_PROXY_URL", "host"),
        ({"STICKY_PROXY_URL": "http://user:pw@gw.example"}, "STICKY_PROXY_URL", "port"),
        (
            {"STICKY_PROXY_URL": "ftp://u-{session}:pw@gw.example:8000"},
            "STICKY_PROXY_URL",
            "scheme",
        ),
        (
            {"STICKY_PROXY_URL": "socks5://u-{session}:pw@gw.example:8000"},
            "STICKY_PROXY_URL",
            "socks",
        ),
        (
            {"STICKY_PROXY_URL": "http://u-{sesion}:pw@gw.example:8000"},
            "STICKY_PROXY_URL",
            "sesion",
        ),
        ({"STICKY_PROXY_URL": PLAIN}, "STICKY_PROXY_URL", r"\{session\}"),
        (
            {
                "STICKY_PROXY_URL": "http://gw.example:8000",
                "STICKY_PROXY_PROVIDER": "brightdata",
            },
            "STICKY_PROXY_URL",
            "username",
        ),
        (
            {
                "STICKY_PROXY_URL": "http://user@gw.example:8000",
                "STICKY_PROXY_PROVIDER": "packetstream",
            },
            "STICKY_PROXY_URL",
            "password",
        ),
        (
            {
                "STICKY_PROXY_URL": PLAIN,
                "STICKY_PROXY_PROVIDER": "oxylabs",
                "STICKY_PROXY_SESSION_LIFETIME": 90,
            },
            "STICKY_PROXY_SESSION_LIFETIME",
            "whole number of minutes",
        ),
        (
            {
                "STICKY_PROXY_URL": PLAIN,
                "STICKY_PROXY_PROVIDER": "geonode",
                "STICKY_PROXY_SESSION_LIFETIME": 60,
            },
            "STICKY_PROXY_SESSION_LIFETIME",
            "out of range",
        ),
        (
            {
                "STICKY_PROXY_URL": PLAIN,
                "STICKY_PROXY_PROVIDER": "brightdata",
                "STICKY_PROXY_SESSION_LIFETIME": 600,
            },
            "STICKY_PROXY_SESSION_LIFETIME",
            "no lifetime",
        ),
        ({"STICKY_PROXY_MAX_REROLLS": -1}, "STICKY_PROXY_MAX_REROLLS", "at least 0"),
        (
            {"STICKY_PROXY_MAX_REROLLS": "many"},
            "STICKY_PROXY_MAX_REROLLS",
            "whole number",
        ),
        (
            {"STICKY_PROXY_BAN_PATTERNS": '["captcha", '},
            "STICKY_PROXY_BAN_PATTERNS",
            "not a JSON list",
        ),
        (  # deeper than the JSON parser goes: a RecursionError before
            {"STICKY_PROXY_BAN_PATTERNS": "[" * 100_000},
            "STICKY_PROXY_BAN_PATTERNS",
            "not a JSON list",
        ),
        (
            {"STICKY_PROXY_BAN_PATTERNS": ["captcha(("]},
            "STICKY_PROXY_BAN_PATTERNS",
            "does not compile",
        ),
        ({"STICKY_PROXY_BAN_STATUSES": [403, 999]}, "STICKY_PROXY_BAN_STATUSES", "999"),
        ({"STICKY_PROXY_BAN_STATUSES": [407]}, "STICKY_PROXY_BAN_STATUSES", "407"),
        (
            {"STICKY_PROXY_BAN_POLICY": "nosuch.module.Policy"},
            "STICKY_PROXY_BAN_POLICY",
            "cannot import",
        ),
        (
            {"STICKY_PROXY_BAN_EXCEPTIONS": ["builtins.len"]},
            "STICKY_PROXY_BAN_EXCEPTIONS",
            "not a class",
        ),
        ({"STICKY_PROXY_KEY": "nosuch.module.func"}, "STICKY_PROXY_KEY", "nosuch"),
        (
            {"STICKY_PROXY_KEY": f"{__name__}.NOT_CALLABLE"},
            "STICKY_PROXY_KEY",
            "callable",
        ),
        ({"STICKY_PROXY_BACKEND": "mongo"}, "STICKY_PROXY_BACKEND", "mongo"),
        (  # which entry of the list
            {"STICKY_PROXY_LIST": ["http://a:1", "http://u:pw@b"]},
            "STICKY_PROXY_LIST",
            "entry 1: has no port",
        ),
        (
            {"STICKY_PROXY_SESSION_MAX_AGE": -5},
            "STICKY_PROXY_SESSION_MAX_AGE",
            "positive",
        ),
        (
            {"STICKY_PROXY_SESSION_MAX_USES": 0},
            "STICKY_PROXY_SESSION_MAX_USES",
            "at least 1",
        ),
        ({"STICKY_PROXY_MAX_KEYS": 0}, "STICKY_PROXY_MAX_KEYS", "at least 1"),
        ({"STICKY_PROXY_ENABLED": "maybe"}, "STICKY_PROXY_ENABLED", "True/False"),
        (
            {"STICKY_PROXY_URL": None, "STICKY_PROXY_LIST": None},
            "STICKY_PROXY_URL",
            "not set",
        ),
        ({"STICKY_PROXY_LIST": ["http://a:1"]}, "STICKY_PROXY_URL", "not both"),
        (
            {"STICKY_PROXY_URL": None, "STICKY_PROXY_LIST": {"http://a:1": 0}},
            "STICKY_PROXY_LIST",
            "positive",
        ),
        (
            {"STICKY_PROXY_URL": None, "STICKY_PROXY_LIST": ["ftp://a:1"]},
            "STICKY_PROXY_LIST",
            "scheme",
        ),
        (
            {"STICKY_PROXY_URL": None, "STICKY_PROXY_LIST": 5},
            "STICKY_PROXY_LIST",
            "list",
        ),
    ],
)
def test_bad_setting(values: dict[str, Any], setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config(**values)
    assert str(info.value).startswith(f"{setting}: ")
    assert info.value.setting == setting
    assert "s3cret-pw" not in str(info.value)
    assert "pw@" not in str(info.value)


def test_defaults() -> None:
    cfg = config(STICKY_PROXY_URL="http://u-{session}:s3cret-pw@gw.example:8000")
    assert cfg.enabled and cfg.max_rerolls == 5 and cfg.backend == "memory"
    assert cfg.ban_statuses == {401, 403, 429}
    assert cfg.gateway is not None and cfg.gateway.hostport == "gw.example:8000"
    assert cfg.redact("x s3cret-pw y") == "x *** y"


def test_list_settings_as_text_may_be_json() -> None:
    """``-s 'STICKY_PROXY_BAN_PATTERNS=["captcha"]'`` was read as one
    regex, a character class that matched every page: every answer a ban."""
    cfg = config(
        STICKY_PROXY_URL=URL,
        STICKY_PROXY_BAN_PATTERNS='["captcha", "a{1,3}b"]',
        STICKY_PROXY_BAN_STATUSES="[403, 429]",
    )
    assert [p.pattern for p in cfg.ban_patterns] == [b"captcha", b"a{1,3}b"]
    assert cfg.ban_statuses == {403, 429}
    split = config(STICKY_PROXY_URL=URL, STICKY_PROXY_BAN_PATTERNS="captcha, denied")
    assert [p.pattern for p in split.ban_patterns] == [b"captcha", b"denied"]


def test_key_policy_callable() -> None:
    cfg = config(
        STICKY_PROXY_URL=PLAIN,
        STICKY_PROXY_PROVIDER="brightdata",
        STICKY_PROXY_KEY=f"{__name__}.sticky_key",
    )
    assert cfg.key_func is not None and cfg.key_func(object()) == "k"


def test_static_list_ids_hide_credentials() -> None:
    cfg = config(
        STICKY_PROXY_URL=None,
        STICKY_PROXY_LIST={
            "http://a:s3cret-pw@p1.example:3128": 2,
            "http://b:s3cret-pw@p1.example:3128": 1,
            "http://p2.example:3128": 1,
        },
    )
    assert [p.id for p in cfg.static_proxies] == [
        "p1.example:3128",
        "p1.example:3128#2",
        "p2.example:3128",
    ]
    assert [p.weight for p in cfg.static_proxies] == [2.0, 1.0, 1.0]
    assert cfg.secrets == ("s3cret-pw",)  # one form, said once


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STICKY_PROXY_URL", "http://u-{session}:s3cret-pw@env.example:1")
    cfg = StickyProxyConfig.from_settings(Settings({}))
    assert cfg.gateway is not None and cfg.gateway.hostport == "env.example:1"


def test_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_PW", "s3cret-pw")
    cfg = config(STICKY_PROXY_URL="http://u-{session}:{env:PROXY_PW}@gw.example:1")
    assert cfg.gateway is not None
    assert cfg.gateway.render("abc") == "http://u-abc:s3cret-pw@gw.example:1"
    assert cfg.redact("x s3cret-pw") == "x ***"
    with pytest.raises(ConfigError, match=r"STICKY_PROXY_URL: .*NOPE is not set"):
        config(STICKY_PROXY_URL="http://u-{session}:{env:NOPE}@gw.example:1")
    monkeypatch.setenv("REDIS_PW", "hunter2")
    cfg = config(STICKY_PROXY_REDIS_URL="redis://:{env:REDIS_PW}@h:1/0")
    assert cfg.redis_url == "redis://:hunter2@h:1/0"
    monkeypatch.setenv("LIST_PW", "s3cret-pw")
    cfg = config(
        STICKY_PROXY_URL=None, STICKY_PROXY_LIST=["http://u:{env:LIST_PW}@p.example:1"]
    )
    assert (
        cfg.static_proxies[0].template.render("x") == "http://u:s3cret-pw@p.example:1"
    )


# Every numeric setting: (name, a good value, the documented maximum).
NUMBERS = [
    ("STICKY_PROXY_SESSION_LIFETIME", 600, 604_800),
    ("STICKY_PROXY_MAX_REROLLS", 5, 1000),
    ("STICKY_PROXY_BAN_TOLERANCE", 3, 100),
    ("STICKY_PROXY_TOLERANCE_BACKOFF", 1.0, 604_800),
    ("STICKY_PROXY_RETRY_AFTER_MAX", 60.0, 3600),
    ("STICKY_PROXY_REDIS_TTL", 86400, 2_592_000),
    ("STICKY_PROXY_SESSION_MAX_AGE", 60.0, 604_800),
    ("STICKY_PROXY_SESSION_MAX_USES", 10, 1_000_000_000),
    ("STICKY_PROXY_MAX_KEYS", 1000, 100_000_000),
    ("STICKY_PROXY_LIST_UNHEALTHY_AFTER", 3, 1000),
    ("STICKY_PROXY_LIST_DEAD_AFTER", 12, 10_000),
    ("STICKY_PROXY_LIST_BACKOFF", 30.0, 604_800),
    ("STICKY_PROXY_LIST_BACKOFF_MAX", 1800.0, 604_800),
    ("STICKY_PROXY_LOG_INTERVAL", 60.0, 604_800),
    ("STICKY_PROXY_OUTAGE_BACKOFF_MAX", 10.0, 604_800),
    ("STICKY_PROXY_OUTAGE_TIMEOUT", 600.0, 604_800),
    ("STICKY_PROXY_CONNECTIONS_PER_SESSION", 2, 1000),
]
# (value, what the error says): non-finite numbers, as Python floats and as
# the strings `scrapy crawl -s NAME=nan` passes, bools, absurd magnitudes.
BAD_NUMBERS = [
    (float("nan"), "finite"),
    ("nan", "finite|whole number"),
    (float("inf"), "finite"),
    ("inf", "finite|whole number"),
    (float("-inf"), "finite"),
    (True, "a number, got True"),
    (False, "a number, got False"),
    (10**30, "at most"),
    (1e300, "at most"),
    ([1], "expected a"),
]


def around(setting: str, value: Any) -> dict[str, Any]:
    """*setting* = *value*, with what the setting needs to be valid."""
    values = {setting: value}
    if setting == "STICKY_PROXY_SESSION_LIFETIME":
        values["STICKY_PROXY_URL"] = "http://u-{session}-{lifetime}:s3cret-pw@gw:1"
    return values


@pytest.mark.parametrize("value,message", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("setting,good,maximum", NUMBERS, ids=str)
def test_bad_number(
    setting: str, good: Any, maximum: int, value: Any, message: str
) -> None:
    config(**around(setting, good))  # the setting itself is fine
    with pytest.raises(ConfigError, match=message) as info:
        config(**around(setting, value))
    assert info.value.setting == setting
    assert str(info.value).startswith(f"{setting}: ")


@pytest.mark.parametrize("setting,good,maximum", NUMBERS, ids=str)
def test_numbers_up_to_their_maximum(setting: str, good: Any, maximum: int) -> None:
    values = around(setting, maximum)
    if setting == "STICKY_PROXY_LIST_UNHEALTHY_AFTER":
        values["STICKY_PROXY_LIST_DEAD_AFTER"] = maximum + 1
    if setting == "STICKY_PROXY_LIST_BACKOFF":
        values["STICKY_PROXY_LIST_BACKOFF_MAX"] = maximum
    config(**values)
    with pytest.raises(ConfigError, match="at most") as info:
        config(**{**values, setting: maximum + 1})
    assert info.value.setting == setting


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), True, 10**30, 0, -1, "heavy"], ids=repr
)
def test_bad_static_proxy_weight(value: Any) -> None:
    with pytest.raises(ConfigError, match="weight") as info:
        config(STICKY_PROXY_URL=None, STICKY_PROXY_LIST={"http://p.example:1": value})
    assert info.value.setting == "STICKY_PROXY_LIST"


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), "inf", True, 403.5, 10**30], ids=repr
)
def test_bad_ban_status(value: Any) -> None:
    with pytest.raises(ConfigError, match="HTTP status") as info:
        config(STICKY_PROXY_BAN_STATUSES=[403, value])
    assert info.value.setting == "STICKY_PROXY_BAN_STATUSES"


@pytest.mark.parametrize(
    "value",
    ["lots", "nan", float("nan"), float("inf"), True, 10**30, -1, "²"],
    ids=repr,
)
def test_bad_pool_max_idle(value: Any) -> None:
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy.handler import StickyProxyDownloadHandler

    crawler = get_crawler(settings_dict={"STICKY_PROXY_POOL_MAX_IDLE": value})
    with pytest.raises(ConfigError) as info:
        StickyProxyDownloadHandler(crawler)
    assert str(info.value).startswith("STICKY_PROXY_POOL_MAX_IDLE: ")


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_unwritable_gave_up_file(tmp_path: Any, where: str) -> None:
    path = tmp_path / "nonexistent" / "x.jsonl" if where == "missing" else tmp_path
    with pytest.raises(ConfigError, match=where) as info:
        config(STICKY_PROXY_GAVE_UP_FILE=str(path))
    assert info.value.setting == "STICKY_PROXY_GAVE_UP_FILE"


def test_gave_up_file_opened_for_append_at_start(tmp_path: Any) -> None:
    path = tmp_path / "gave_up.jsonl"
    cfg = config(STICKY_PROXY_GAVE_UP_FILE=str(path))
    assert cfg.gave_up_file == str(path)
    assert path.exists()  # created at start, empty
    path.write_text('{"old": 1}\n')
    config(STICKY_PROXY_GAVE_UP_FILE=str(path))
    assert path.read_text() == '{"old": 1}\n'  # appended to, never truncated


# -- one parse per crawler, handed to every component -------------------------------


@pytest.mark.parametrize(
    "component",
    ["StickyProxyMiddleware", "StickyProxyStats", "StickyProxyInheritMiddleware"],
)
def test_a_disabled_package_steps_aside_without_a_proxy(component: str) -> None:
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.misc import build_from_crawler
    from scrapy.utils.test import get_crawler

    import scrapy_sticky_proxy

    crawler = get_crawler(
        settings_dict={"STICKY_PROXY_ENABLED": False, "STICKY_PROXY_INHERIT_KEY": True}
    )
    with pytest.raises(NotConfigured):
        build_from_crawler(getattr(scrapy_sticky_proxy, component), crawler)


def test_a_disabled_package_leaves_the_cache_alone() -> None:
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy.cache import BanCacheGuard

    settings = {"STICKY_PROXY_ENABLED": False, "HTTPCACHE_ENABLED": True}
    with pytest.raises(NotConfigured, match="STICKY_PROXY_ENABLED"):
        BanCacheGuard(get_crawler(settings_dict=settings))


def test_the_download_handler_needs_no_proxy_url() -> None:
    """A handler routes nothing: it builds without STICKY_PROXY_URL, and the
    middleware, which asks the same cached parse, still reports it."""
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy.config import for_crawler
    from scrapy_sticky_proxy.handler import StickyProxyDownloadHandler

    crawler = get_crawler(settings_dict={"STICKY_PROXY_POOL_MAX_IDLE": 7})
    handler = StickyProxyDownloadHandler(crawler)
    assert handler._pool.max_idle == 7
    with pytest.raises(ConfigError, match="not set") as info:
        for_crawler(crawler)
    assert info.value.setting == "STICKY_PROXY_URL"


def test_components_share_one_parse() -> None:
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy import BanPolicy, StickyProxyDownloadHandler
    from scrapy_sticky_proxy.config import for_crawler

    crawler = get_crawler(
        settings_dict={
            "STICKY_PROXY_URL": URL,
            "STICKY_PROXY_BAN_STATUSES": [418],
            "STICKY_PROXY_POOL_MAX_IDLE": 3,
        }
    )
    StickyProxyDownloadHandler(crawler)  # parses first, without requiring a proxy
    config = for_crawler(crawler)
    assert for_crawler(crawler, require_proxy=False) is config
    assert config.gateway is not None and config.pool_max_idle == 3
    assert BanPolicy.from_crawler(crawler).statuses == {418}
    assert for_crawler(get_crawler(settings_dict={"STICKY_PROXY_URL": URL})) is not (
        config
    )


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"STICKY_PROXY_SERIALIZER_CLASSES": ["not a path"]}, "SERIALIZER_CLASSES"),
        ({"STICKY_PROXY_ALLOW_HANDLERS": 5}, "ALLOW_HANDLERS"),
        ({"STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS": 0}, "PLAYWRIGHT_MAX_CONTEXTS"),
        ({"STICKY_PROXY_PLAYWRIGHT_IDLE_TIMEOUT": "soon"}, "PLAYWRIGHT_IDLE_TIMEOUT"),
    ],
)
def test_component_settings_are_checked_at_start(
    values: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config(**values)
    assert info.value.setting == f"STICKY_PROXY_{setting}"


def test_the_command_parses_only_the_shared_state_settings() -> None:
    """No crawler, nothing to route: a URL whose password is in an unset
    environment variable does not stop ``scrapy sticky_proxy``."""
    from scrapy_sticky_proxy.config import SharedStateConfig

    settings = Settings(
        {
            "STICKY_PROXY_URL": "http://u-{session}:{env:NO_SUCH_VAR_XYZ}@gw:1",
            "STICKY_PROXY_NAMESPACE": "ns1",
            "REDIS_URL": "redis://127.0.0.1:1",
        }
    )
    shared = SharedStateConfig.from_settings(settings)
    assert (shared.namespace, shared.redis_url) == ("ns1", "redis://127.0.0.1:1")
    with pytest.raises(ConfigError, match="NO_SUCH_VAR_XYZ"):
        StickyProxyConfig.from_settings(settings)


TIER = {"url": "http://user-{session}:tier-pw@127.0.0.1:8001"}


@pytest.mark.parametrize(
    ("values", "setting", "says", "not_says"),
    [
        # What a new user wrote (issue 15), and what the message said before.
        ({"STICKY_PROXY_TIERS": TIER}, "TIERS", "got a dict", None),
        ({"STICKY_PROXY_TIERS": [TIER] * 17}, "TIERS", "got 17", None),
        ({"STICKY_PROXY_TIERS": [{"urll": TIER["url"]}]}, "TIERS", "'urll'", None),
        ({"STICKY_PROXY_TIERS": str([TIER])}, "TIERS", "double quotes", None),
        (
            {"STICKY_PROXY_SESSION_POOL_SIZES": "{'a': 2}"},
            "SESSION_POOL_SIZES",
            "double quotes",
            None,
        ),
        (
            {"STICKY_PROXY_SESSION_POOL_SIZE": 0},
            "SESSION_POOL_SIZE",
            "at least 1, got 0",
            "0.0",
        ),
        ({"STICKY_PROXY_SESSION_POOL_SIZE": "0"}, "SESSION_POOL_SIZE", "got 0", "0.0"),
        ({"STICKY_PROXY_MAX_REROLLS": "-1"}, "MAX_REROLLS", "got -1", "-1.0"),
        (
            {"STICKY_PROXY_SESSION_SLOT_DELAY": -1},
            "SESSION_SLOT_DELAY",
            "must be 0 or more, got -1",
            "-1.0",
        ),
        (
            {"STICKY_PROXY_SESSION_SLOT_DELAY": 5000},
            "SESSION_SLOT_DELAY",
            "at most 3600, got 5000",
            ".0",
        ),
        (
            {"STICKY_PROXY_TIER_QUIET": -1},
            "TIER_QUIET",
            "must be positive, got -1",
            "-1.0",
        ),
        (
            {"STICKY_PROXY_OUTAGE_TIMEOUT": "1e9"},
            "OUTAGE_TIMEOUT",
            "at most 604800, got 1000000000",
            ".0",
        ),
    ],
)
def test_messages_say_what_was_given_and_what_is_allowed(
    values: dict[str, Any], setting: str, says: str, not_says: str | None
) -> None:
    if "STICKY_PROXY_TIERS" in values:
        values = {"STICKY_PROXY_URL": None, **values}  # a tier: not both
    with pytest.raises(ConfigError) as info:
        config(**values)
    message = str(info.value)
    assert info.value.setting == f"STICKY_PROXY_{setting}", message
    assert says in message, message
    assert not_says is None or not_says not in message, message
    assert "pw" not in message
