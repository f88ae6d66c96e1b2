"""The settings that locate and read the state crawlers share: the Redis
connection (STICKY_PROXY_REDIS_URL, falling back to scrapy-redis's
REDIS_URL, REDIS_HOST/REDIS_PORT and REDIS_PARAMS), STICKY_PROXY_NAMESPACE,
the static proxies' health policy (STICKY_PROXY_LIST_*), which labels
the shared proxy states, and STICKY_PROXY_SHARE_COOKIES.

:class:`SharedStateConfig` holds just these, for ``scrapy sticky_proxy``:
a command has no crawler and no proxy to route, so it parses these and
nothing else (a URL whose ``{env:...}`` password is not set on the machine
where the command runs does not stop it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..routing.health import PoolPolicy
from .readers import (
    WEEK,
    expand_env,
    read_bool,
    read_float,
    read_int,
    read_str,
    shown,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

DEFAULT_NAMESPACE = "sticky_proxy"
# Client options that make sense for our connection; scrapy-redis's own
# defaults (30 s socket timeout) would hide a lost Redis for too long.
_REDIS_DEFAULTS = {"socket_timeout": 5, "socket_connect_timeout": 2}
_REDIS_IGNORED = {"redis_cls", "url", "encoding", "decode_responses", "encoding_errors"}
# Client options whose wrong type redis-py only notices when it connects,
# reported then as "cannot reach Redis".
_REDIS_SECONDS = ("socket_timeout", "socket_connect_timeout")
_REDIS_FLAGS = ("socket_keepalive", "retry_on_timeout", "ssl_check_hostname")
_REDIS_POOL_OPTIONS = ("max_connections",)  # the pool's, not a connection's
_SMALLEST_TIMEOUT = 0.001


@dataclass(frozen=True)
class SharedStateConfig:
    redis_url: str = field(default="redis://localhost:6379", repr=False)
    redis_params: dict[str, Any] = field(default_factory=dict, repr=False)
    namespace: str = DEFAULT_NAMESPACE
    pool_policy: PoolPolicy = field(default_factory=PoolPolicy)

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> SharedStateConfig:
        url, params = redis_url(settings), redis_params(settings)
        check_redis(url, params)
        return cls(
            redis_url=url,
            namespace=namespace(settings),
            pool_policy=pool_policy(settings),
            redis_params=params,
        )


def namespace(settings: BaseSettings) -> str:
    name = read_str(settings, "STICKY_PROXY_NAMESPACE") or DEFAULT_NAMESPACE
    try:
        name.encode()  # every Redis key starts with it
    except UnicodeEncodeError:
        raise ConfigError("STICKY_PROXY_NAMESPACE", "is not UTF-8 text") from None
    return name


def redis_url(settings: BaseSettings) -> str:
    """STICKY_PROXY_REDIS_URL, else scrapy-redis's REDIS_URL, else its
    REDIS_HOST/REDIS_PORT, else redis://localhost:6379 (scrapy-redis's default)."""
    url = read_str(settings, "STICKY_PROXY_REDIS_URL") or read_str(
        settings, "REDIS_URL"
    )
    if url:
        url = expand_env(url, "STICKY_PROXY_REDIS_URL")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "STICKY_PROXY_REDIS_URL",
                "expected a redis://, rediss:// or unix:// URL",
            )
        return url
    host = settings.get("REDIS_HOST") or "localhost"
    port = settings.get("REDIS_PORT") or 6379
    return f"redis://{host}:{port}"


def redis_params(settings: BaseSettings) -> dict[str, Any]:
    try:
        params = settings.getdict("REDIS_PARAMS")
    except (ValueError, TypeError):
        raise ConfigError("REDIS_PARAMS", "expected a dict") from None
    extra = {k: v for k, v in params.items() if k not in _REDIS_IGNORED}
    return {**_REDIS_DEFAULTS, **extra}


def check_redis(url: str, params: dict[str, Any]) -> None:
    """That the redis package is there and that a client can be built from
    *url* and *params* (no connection is made): what redis-py would only
    find out when connecting, at spider open, where it is no settings error."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(
            "STICKY_PROXY_BACKEND",
            "'redis' needs the redis package: pip install 'scrapy-sticky-proxy[redis]'",
        ) from None
    from ..state.redis_layout import quiet_client

    for name, value in params.items():
        expected = _redis_option_problem(name, value)
        if expected:
            raise ConfigError(
                "REDIS_PARAMS", f"{name}: expected {expected}, got {shown(value)}"
            )
    try:
        pool = aioredis.ConnectionPool.from_url(url)
    except ValueError as exc:
        password = urlsplit(url).password
        problem = str(exc).replace(password, "***") if password else str(exc)
        raise ConfigError("STICKY_PROXY_REDIS_URL", problem) from None
    # The URL's own options (?socket_timeout=0), parsed by redis-py.
    for name, value in pool.connection_kwargs.items():
        expected = _redis_option_problem(name, value)
        if expected:
            raise ConfigError(
                "STICKY_PROXY_REDIS_URL", f"{name}: expected {expected}, got {value!r}"
            )
    options = {k: v for k, v in params.items() if k not in _REDIS_POOL_OPTIONS}
    try:
        pool.connection_class(**{**quiet_client(), **options})
    except TypeError as exc:
        raise ConfigError("REDIS_PARAMS", str(exc)) from None


def _redis_option_problem(name: str, value: Any) -> str | None:
    """What *value* should be, if it is not a good value of option *name*."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in _REDIS_SECONDS or name == "health_check_interval":
        # None is no timeout: a Redis that stops answering would hang us.
        zero = name == "health_check_interval"
        low = 0 if zero else _SMALLEST_TIMEOUT
        good = number and low <= value <= WEEK
        return None if good else f"a number of seconds from {low:g} to {WEEK}"
    if name in _REDIS_FLAGS:
        return None if isinstance(value, bool) else "True or False"
    if name == "max_connections":
        good = isinstance(value, int) and number and 0 < value <= 10**6
        return None if value is None or good else "a whole number from 1 to 1000000"
    return None


def pool_policy(settings: BaseSettings) -> PoolPolicy:
    default = PoolPolicy()
    values = {
        "unhealthy_after": read_int(
            settings,
            "STICKY_PROXY_LIST_UNHEALTHY_AFTER",
            default.unhealthy_after,
            1,
            1000,
        ),
        "dead_after": read_int(
            settings, "STICKY_PROXY_LIST_DEAD_AFTER", default.dead_after, 2, 10_000
        ),
        "backoff_base": read_float(
            settings, "STICKY_PROXY_LIST_BACKOFF", default.backoff_base
        ),
        "backoff_max": read_float(
            settings, "STICKY_PROXY_LIST_BACKOFF_MAX", default.backoff_max
        ),
    }
    try:
        return PoolPolicy(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        if "backoff" in str(exc):
            raise ConfigError("STICKY_PROXY_LIST_BACKOFF_MAX", str(exc)) from None
        raise ConfigError(
            "STICKY_PROXY_LIST_DEAD_AFTER",
            f"must be above STICKY_PROXY_LIST_UNHEALTHY_AFTER, got "
            f"{values['dead_after']} and {values['unhealthy_after']}",
        ) from None


def share_cookies(settings: BaseSettings, backend: str) -> bool:
    """STICKY_PROXY_SHARE_COOKIES: only the Redis backend has somewhere to
    share them."""
    name = "STICKY_PROXY_SHARE_COOKIES"
    share = read_bool(settings, name, False)
    if share and backend != "redis":
        raise ConfigError(name, "needs STICKY_PROXY_BACKEND = 'redis'")
    return share
