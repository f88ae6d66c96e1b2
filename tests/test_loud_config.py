"""Misconfigurations fail loudly, at start (issue 13, items 2, 3, 9 and 10):
a misspelt setting name, a value that would only fail once the crawl runs,
a redis backend without the redis package; and the error reads as one line
naming the setting, not as a crash."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy import BanPolicy
from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.sandbox import Sandbox

from .test_example import crawl_example

URL = "http://user-{session}:s3cret-pw@gw.example:8000"
ADDON = {"ADDONS": {"scrapy_sticky_proxy.Addon": 100}}
ROOT = Path(__file__).resolve().parent.parent


def config(**values: Any) -> StickyProxyConfig:
    values.setdefault("STICKY_PROXY_URL", URL)
    return StickyProxyConfig.from_settings(Settings(values))


def value_id(value: Any) -> str:
    """A test id without a function's address, the same in every pytest-xdist
    worker (which refuses to run when its workers collected different ids)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def assert_names(error: ConfigError, setting: str) -> None:
    assert error.setting == setting
    assert str(error).startswith(f"{setting}: ")
    assert "s3cret-pw" not in str(error)


# -- item 3: misspelt names ------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("STICKY_PROXY_BAN_PATERNS", "STICKY_PROXY_BAN_PATTERNS"),
        ("STICKY_PROXY_MAX_REROLL", "STICKY_PROXY_MAX_REROLLS"),
        ("STICKY_PROXY_PROVDER", "STICKY_PROXY_PROVIDER"),
        ("STICKY_PROXY_REDIS_TLL", "STICKY_PROXY_REDIS_TTL"),
        # The prefix itself mistyped: these went unnoticed.
        ("STICKY_PRXY_BAN_PATTERNS", "STICKY_PROXY_BAN_PATTERNS"),
        ("STICKYPROXY_MAX_REROLLS", "STICKY_PROXY_MAX_REROLLS"),
        ("sticky_proxy_max_rerolls", "STICKY_PROXY_MAX_REROLLS"),
        ("Sticky_Proxy_Key", "STICKY_PROXY_KEY"),
    ],
)
def test_a_misspelt_setting_stops_the_crawl_with_the_closest_name(
    typo: str, meant: str
) -> None:
    # PROVDER first: with the typo, the URL's missing placeholder was the error.
    with pytest.raises(ConfigError) as info:
        config(STICKY_PROXY_URL="http://user:s3cret-pw@gw.example:8000", **{typo: 1})
    assert_names(info.value, typo)
    assert f"did you mean {meant}?" in str(info.value)
    assert "STICKY_PROXY_EXTRA_SETTINGS" in str(info.value)


@pytest.mark.parametrize("name", ["STICKY_PROXIES", "MY_PROXY_URL", "PROXY_LIST"])
def test_a_setting_of_the_users_own_is_not_taken_for_a_typo(name: str) -> None:
    config(**{name: 1})


def test_every_unknown_name_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config(STICKY_PROXY_ZZZ=1, STICKY_PROXY_BAN_PATERNS=["x"])
    assert_names(info.value, "STICKY_PROXY_BAN_PATERNS")
    assert "STICKY_PROXY_ZZZ" in str(info.value)
    assert "did you mean" not in str(info.value).split("STICKY_PROXY_ZZZ")[1]


def test_extra_settings_are_let_through_deliberately() -> None:
    config(
        STICKY_PROXY_MY_OWN=1,
        STICKY_PROXY_EXTRA_SETTINGS=["STICKY_PROXY_MY_OWN"],
    )
    config(STICKY_PROXY_MY_OWN=1, STICKY_PROXY_EXTRA_SETTINGS="STICKY_PROXY_MY_OWN")
    with pytest.raises(ConfigError) as info:
        config(STICKY_PROXY_EXTRA_SETTINGS=[5])
    assert_names(info.value, "STICKY_PROXY_EXTRA_SETTINGS")


def test_names_set_below_the_project_are_not_checked() -> None:
    """Scrapy's defaults and what an add-on writes (at addon priority) are
    not the user's typos; the addon itself trips nothing."""
    settings = Settings({"STICKY_PROXY_URL": URL})
    settings.set("STICKY_PROXY_FROM_AN_ADDON", 1, "addon")
    settings.set("STICKY_PROXY_FROM_A_COMMAND", 1, "command")
    StickyProxyConfig.from_settings(settings)
    crawler = get_crawler(settings_dict={**ADDON, "STICKY_PROXY_URL": URL})
    assert crawler.settings.getpriority("DOWNLOADER_MIDDLEWARES") is not None


def config_string_names() -> set[str]:
    """Every full STICKY_PROXY_* name written as a literal in config/, but
    in the list of known names itself."""
    names = set()
    for path in (ROOT / "scrapy_sticky_proxy" / "config").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        the_list = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and ast.unparse(node.targets[0]) == "KNOWN_SETTINGS"
            for inner in ast.walk(node)
        }
        names |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"STICKY_PROXY_[A-Z0-9_]*[A-Z0-9]", node.value)
            and id(node) not in the_list
        }
    return names


def test_the_known_names_are_the_names_config_reads() -> None:
    """And the names docs/reference/settings.md documents: see
    tests/test_reference.py."""
    from scrapy_sticky_proxy.config.names import KNOWN_SETTINGS

    assert config_string_names() == KNOWN_SETTINGS


# -- item 10: values that escaped validation -------------------------------------


def raises_on_sample(request: Any) -> str:
    return str(request.meta["video_id"])


class StrictPolicy(BanPolicy):
    pass


# (settings, the setting the error names, what the message says)
BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    *(
        ({name: value}, name, "finite|at most")
        for name in (
            "STICKY_PROXY_MAX_REROLLS",
            "STICKY_PROXY_SESSION_MAX_USES",
            "STICKY_PROXY_MAX_KEYS",
            "STICKY_PROXY_REDIS_TTL",
        )
        for value in (math.inf, 10**20)
    ),
    (
        {
            "STICKY_PROXY_SESSION_LIFETIME": math.inf,
            "STICKY_PROXY_URL": "http://u-{session}-{lifetime}:s3cret-pw@gw:1",
        },
        "STICKY_PROXY_SESSION_LIFETIME",
        "finite",
    ),
    ({"STICKY_PROXY_BAN_STATUSES": [math.inf]}, "STICKY_PROXY_BAN_STATUSES", "HTTP"),
    ({"STICKY_PROXY_BAN_STATUSES": math.inf}, "STICKY_PROXY_BAN_STATUSES", "list"),
    *(
        ({name: value}, name, "True/False")
        for name in (
            "STICKY_PROXY_ENABLED",
            "STICKY_PROXY_INHERIT_KEY",
            "STICKY_PROXY_SLOT_PER_PROXY",
        )
        for value in ("maybe", math.inf, 2, 0.5, [1], {})
    ),
    ({"STICKY_PROXY_LOG_INTERVAL": "abc"}, "STICKY_PROXY_LOG_INTERVAL", "number"),
    ({"STICKY_PROXY_LOG_INTERVAL": 1e-9}, "STICKY_PROXY_LOG_INTERVAL", "at least 1"),
    ({"STICKY_PROXY_LOG_INTERVAL": 0.5}, "STICKY_PROXY_LOG_INTERVAL", "at least 1"),
    (
        {"STICKY_PROXY_OUTAGE_BACKOFF_MAX": 1e-9},
        "STICKY_PROXY_OUTAGE_BACKOFF_MAX",
        "at least 0.1",
    ),
    ({"STICKY_PROXY_BAN_EXCEPTIONS": [5]}, "STICKY_PROXY_BAN_EXCEPTIONS", "5"),
    ({"STICKY_PROXY_ALLOW_HANDLERS": [5]}, "STICKY_PROXY_ALLOW_HANDLERS", "5"),
    (
        {"STICKY_PROXY_ALLOW_HANDLERS": ["no dotted path"]},
        "STICKY_PROXY_ALLOW_HANDLERS",
        "dotted",
    ),
    *(
        ({"STICKY_PROXY_POOL_MAX_IDLE": v}, "STICKY_PROXY_POOL_MAX_IDLE", m)
        for v, m in ((-1, "at least 0"), ("abc", "whole number"), (math.nan, "finite"))
    ),
    (
        {"STICKY_PROXY_BAN_POLICY": "builtins.int"},
        "STICKY_PROXY_BAN_POLICY",
        "BanPolicy",
    ),
    ({"STICKY_PROXY_KEY": "builtins.id"}, "STICKY_PROXY_KEY", "returned int"),
    ({"STICKY_PROXY_KEY": "os.getcwd"}, "STICKY_PROXY_KEY", "accept"),
    ({"STICKY_PROXY_KEY": 0}, "STICKY_PROXY_KEY", "int"),
    ({"STICKY_PROXY_KEY": False}, "STICKY_PROXY_KEY", "bool"),
    *(
        (
            {"STICKY_PROXY_BACKEND": "redis", "REDIS_PARAMS": params},
            "REDIS_PARAMS",
            message,
        )
        for params, message in (
            ({"socket_timeout": "abc"}, "socket_timeout"),
            ({"socket_connect_timeout": math.nan}, "socket_connect_timeout"),
            ({"health_check_interval": -1}, "health_check_interval"),
            ({"retry_on_timeout": "yes"}, "retry_on_timeout"),
            ({"max_connections": 0}, "max_connections"),
            ({"sockettimeout": 5}, "sockettimeout"),
        )
    ),
    (
        {"STICKY_PROXY_BACKEND": "redis", "STICKY_PROXY_REDIS_URL": "redis://h:abc/0"},
        "STICKY_PROXY_REDIS_URL",
        "Port",
    ),
]


@pytest.mark.parametrize(("values", "setting", "message"), BAD_VALUES, ids=repr)
def test_a_bad_value_stops_the_crawl_in_the_addon(
    values: dict[str, Any], setting: str, message: str
) -> None:
    """Through the addon's update_settings, before any component is built
    (item 9), and none of the parsing's frames in its traceback."""
    values = {**ADDON, "STICKY_PROXY_URL": URL, **values}
    with pytest.raises(ConfigError, match=message) as info:
        get_crawler(settings_dict=values)
    assert_names(info.value, setting)
    frames = [entry.name for entry in info.traceback]
    assert "update_settings" in frames and "from_settings" not in frames


@pytest.mark.parametrize(
    "values",
    [
        {"STICKY_PROXY_KEY": f"{__name__}.raises_on_sample"},
        {"STICKY_PROXY_KEY": lambda request: request.url},
        {"STICKY_PROXY_BAN_POLICY": f"{__name__}.StrictPolicy"},
        {"STICKY_PROXY_BAN_POLICY": "scrapy_sticky_proxy.BanPolicy"},
        {"STICKY_PROXY_LOG_INTERVAL": 0},
        {"STICKY_PROXY_LOG_INTERVAL": 1},
        {"STICKY_PROXY_ENABLED": "false", "STICKY_PROXY_INHERIT_KEY": "1"},
        {"STICKY_PROXY_SLOT_PER_PROXY": 0},
        {"STICKY_PROXY_ALLOW_HANDLERS": [Sandbox]},
        {
            "STICKY_PROXY_BACKEND": "redis",
            "REDIS_PARAMS": {"socket_timeout": 3, "retry_on_timeout": True},
        },
    ],
    ids=value_id,
)
def test_good_values_pass(values: dict[str, Any]) -> None:
    """A key function that needs what the sample request lacks (its meta) is
    not refused: the sample only checks that it takes a request."""
    config(**values)


def test_the_key_function_sample_is_never_sent() -> None:
    seen: list[Request] = []
    config(STICKY_PROXY_KEY=lambda request: seen.append(request) or "k")
    assert [r.url for r in seen] == ["http://example.com/"]


# -- items 2 and 9: what `scrapy crawl` shows ------------------------------------


def test_scrapy_crawl_with_a_bad_value_says_so_in_one_line_first(
    sandbox: Sandbox,
) -> None:
    proc = crawl_example(
        "-a",
        f"start_url={sandbox.site_url}/",
        STICKY_PROXY_URL=sandbox.gateway_url,
        STICKY_PROXY_MAX_REROLLS="abc",
        STICKY_PROXY_BAN_PATERNS="captcha",
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert errors[0].endswith(
        "[scrapy_sticky_proxy.config] ERROR: STICKY_PROXY_BAN_PATERNS: not a "
        "setting of scrapy-sticky-proxy; did you mean STICKY_PROXY_BAN_PATTERNS? "
        "(list your own STICKY_PROXY_* settings in STICKY_PROXY_EXTRA_SETTINGS)"
    ), proc.stderr[-3000:]
    # The traceback after it is short: none of the parsing internals.
    assert "readers.py" not in proc.stderr and "model.py" not in proc.stderr
    assert sandbox.site.hits == [] and sandbox.gateway.connections == 0
    assert sandbox.password not in proc.stdout + proc.stderr


def test_scrapy_crawl_of_the_redis_backend_without_redis(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """redis blocked by a package of that name that fails to import, first on
    the path of a real `scrapy crawl`."""
    blocked = tmp_path / "blocked" / "redis"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'redis\'", name="redis")\n'
    )
    proc = crawl_example(
        "-a",
        f"start_url={sandbox.site_url}/",
        path_first=blocked.parent,
        STICKY_PROXY_URL=sandbox.gateway_url,
        STICKY_PROXY_BACKEND="redis",
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert errors[0].endswith(
        "ERROR: STICKY_PROXY_BACKEND: 'redis' needs the redis package: "
        "pip install 'scrapy-sticky-proxy[redis]'"
    ), proc.stderr[-3000:]
    assert sandbox.site.hits == [] and sandbox.gateway.connections == 0


def test_without_the_addon_the_message_still_comes_first() -> None:
    """Manual wiring: the first component that asks for the configuration
    logs the one line before the error goes up through Scrapy."""
    settings = {
        "DOWNLOADER_MIDDLEWARES": {"scrapy_sticky_proxy.StickyProxyMiddleware": 740},
        "EXTENSIONS": {"scrapy_sticky_proxy.StickyProxyStats": 500},
        "STICKY_PROXY_URL": URL,
        "STICKY_PROXY_MAX_KEYS": "many",
    }
    with pytest.raises(ConfigError) as info:
        get_crawler(settings_dict=settings)
    assert_names(info.value, "STICKY_PROXY_MAX_KEYS")
    frames = [entry.name for entry in info.traceback]
    assert frames[-1] == "for_crawler" and "from_settings" not in frames


def test_check_settings_logs_the_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from scrapy_sticky_proxy.config import check_settings

    with pytest.raises(ConfigError):
        check_settings(Settings({"STICKY_PROXY_URL": URL, "STICKY_PROXY_KEY": 5}))
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "STICKY_PROXY_KEY: expected a string or a callable, got int; use 'url', "
        "'host', 'domain', a callable, or a dotted path to a callable (e.g. "
        "'myproject.keys.by_video_id')"
    ]


# -- what a valid project must not trip (a review of the checks above) ----------


class LaterAddon:
    """An add-on after ours that supplies the proxy URL (from a secret
    store, say): valid, although ours runs first."""

    def update_settings(self, settings: Settings) -> None:
        settings.set("STICKY_PROXY_URL", URL, "addon")


def test_a_proxy_url_from_a_later_addon_is_not_missing() -> None:
    addons = {"scrapy_sticky_proxy.Addon": 100, f"{__name__}.LaterAddon": 200}
    crawler = get_crawler(settings_dict={"ADDONS": addons})
    assert crawler.settings["STICKY_PROXY_URL"] == URL


def test_a_disabled_package_runs_none_of_the_checks_that_touch_the_machine(
    tmp_path: Path,
) -> None:
    """Off (STICKY_PROXY_ENABLED = False), a crawl must start wherever the
    package is installed: no user code called, no file created, no Redis
    client asked for; misspelt names are still reported."""
    calls: list[Any] = []
    gave_up = tmp_path / "no-such-dir" / "gave_up.jsonl"
    off = {
        "STICKY_PROXY_ENABLED": False,
        "STICKY_PROXY_KEY": lambda request: calls.append(request) or 1,
        "STICKY_PROXY_GAVE_UP_FILE": str(gave_up),
        "STICKY_PROXY_BACKEND": "redis",
        "REDIS_PARAMS": {"socket_timeout": "abc"},
    }
    assert not config(**off).enabled
    assert calls == []
    with pytest.raises(ConfigError) as error:
        config(**off, STICKY_PROXY_MAX_REROLL=3)
    assert_names(error.value, "STICKY_PROXY_MAX_REROLL")


def test_a_key_function_that_returns_none_for_the_sample_is_let_through() -> None:
    """``request.meta.get("video_id")`` is None on the sample, as
    ``request.meta["video_id"]`` raises there: both are valid projects."""
    config(STICKY_PROXY_KEY=lambda request: request.meta.get("video_id"))
