"""Every STICKY_PROXY_* setting, read and validated once.

``StickyProxyConfig.from_settings`` turns Scrapy settings into a frozen
object. A bad value raises :class:`~scrapy_sticky_proxy.errors.ConfigError`,
whose message starts with the setting's name and never holds a password.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._records import checked_gave_up_file
from ..bans import DEFAULT_BAN_EXCEPTIONS, DEFAULT_BAN_STATUSES, compile_patterns
from ..errors import ConfigError
from ..routing.health import PoolPolicy
from ..routing.keys import load_key_policy
from ..routing.providers import ProviderSpec, get_preset
from ..routing.template import ProxyTemplate
from ..state.store import DEFAULT_MAX_KEYS, Rotation
from .readers import (
    MAX_REROLLS,
    WEEK,
    expand_env,
    read_bool,
    read_float,
    read_int,
    read_list,
    read_str,
    shown,
    whole_number,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

BACKENDS = ("memory", "redis")
# Upper bounds of numeric settings: past these a value is a typo, and an
# unbounded one can keep a request (or the crawl) going forever.
MAX_REDIS_TTL = 30 * 86400
MAX_KEYS = 100_000_000
MAX_WEIGHT = 1_000_000


@dataclass(frozen=True)
class StaticProxy:
    """One entry of STICKY_PROXY_LIST. ``id`` (host:port) is what logs,
    stats, download slots and shared stores see; never the URL."""

    id: str
    template: ProxyTemplate
    weight: float = 1.0


@dataclass(frozen=True)
class StickyProxyConfig:
    enabled: bool = True
    provider: ProviderSpec = field(default_factory=lambda: get_preset("generic"))
    gateway: ProxyTemplate | None = None
    static_proxies: tuple[StaticProxy, ...] = ()
    pool_policy: PoolPolicy = field(default_factory=PoolPolicy)
    key_func: Callable[[Any], str] | None = None
    max_rerolls: int = 5
    ban_statuses: frozenset[int] = frozenset(DEFAULT_BAN_STATUSES)
    ban_patterns: tuple[re.Pattern[bytes], ...] = ()
    ban_exceptions: tuple[type[BaseException], ...] = ()
    ban_policy_cls: type | None = None
    backend: str = "memory"
    redis_url: str | None = None
    redis_params: dict[str, Any] = field(default_factory=dict)
    redis_ttl: int = 86400
    namespace: str = "sticky_proxy"
    rotation: Rotation = field(default_factory=Rotation)
    max_keys: int = DEFAULT_MAX_KEYS
    gave_up_file: str | None = None
    inherit_key: bool = False
    slot_per_proxy: bool = True
    log_interval: float = 60.0
    outage_backoff_max: float = 10.0
    outage_timeout: float = 600.0
    probe_wait: float = 10.0
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> StickyProxyConfig:
        enabled = read_bool(settings, "STICKY_PROXY_ENABLED", True)
        provider = get_preset(read_str(settings, "STICKY_PROXY_PROVIDER") or "generic")
        lifetime = read_int(settings, "STICKY_PROXY_SESSION_LIFETIME", None, 0, WEEK)
        url = read_str(settings, "STICKY_PROXY_URL") or os.environ.get(
            "STICKY_PROXY_URL"
        )
        if url:
            url = expand_env(url, "STICKY_PROXY_URL")
        static = _static_list(settings.get("STICKY_PROXY_LIST"))
        if url and static:
            raise ConfigError(
                "STICKY_PROXY_URL",
                "set either STICKY_PROXY_URL (a gateway) or STICKY_PROXY_LIST "
                "(static proxies), not both",
            )
        if not url and not static and provider.name == "sandbox" and enabled:
            from ..sandbox import embedded

            url = embedded().gateway_url
        gateway = None
        if url:
            gateway = ProxyTemplate.parse(url, provider, lifetime)
        elif not static and enabled:
            raise ConfigError(
                "STICKY_PROXY_URL",
                "not set: give your gateway URL (http://user:pass@host:port), "
                "or STICKY_PROXY_LIST, or STICKY_PROXY_PROVIDER = 'sandbox' "
                "for the offline sandbox",
            )
        secrets = tuple(
            secret
            for template in [gateway, *(p.template for p in static)]
            if template is not None
            for secret in template.secrets
            if secret
        )
        backend = (read_str(settings, "STICKY_PROXY_BACKEND") or "memory").lower()
        if backend not in BACKENDS:
            raise ConfigError(
                "STICKY_PROXY_BACKEND",
                f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}",
            )
        policy_path = read_str(settings, "STICKY_PROXY_BAN_POLICY")
        return cls(
            enabled=enabled,
            provider=provider,
            gateway=gateway,
            static_proxies=static,
            pool_policy=_pool_policy(settings),
            key_func=load_key_policy(settings.get("STICKY_PROXY_KEY") or "url"),
            max_rerolls=read_int(
                settings, "STICKY_PROXY_MAX_REROLLS", 5, 0, MAX_REROLLS
            )
            or 0,
            ban_statuses=_statuses(settings),
            ban_patterns=compile_patterns(
                read_list(settings, "STICKY_PROXY_BAN_PATTERNS"),
                "STICKY_PROXY_BAN_PATTERNS",
            ),
            ban_exceptions=_exceptions(settings),
            ban_policy_cls=_load_class(policy_path, "STICKY_PROXY_BAN_POLICY")
            if policy_path
            else None,
            backend=backend,
            redis_url=_redis_url(settings),
            redis_params=_redis_params(settings),
            redis_ttl=read_int(
                settings, "STICKY_PROXY_REDIS_TTL", 86400, 1, MAX_REDIS_TTL
            )
            or 86400,
            namespace=read_str(settings, "STICKY_PROXY_NAMESPACE") or "sticky_proxy",
            rotation=Rotation(
                max_age=read_float(settings, "STICKY_PROXY_SESSION_MAX_AGE", None),
                max_uses=read_int(settings, "STICKY_PROXY_SESSION_MAX_USES", None, 1),
            ),
            max_keys=read_int(
                settings, "STICKY_PROXY_MAX_KEYS", DEFAULT_MAX_KEYS, 1, MAX_KEYS
            )
            or DEFAULT_MAX_KEYS,
            gave_up_file=checked_gave_up_file(settings),
            inherit_key=read_bool(settings, "STICKY_PROXY_INHERIT_KEY", False),
            slot_per_proxy=read_bool(settings, "STICKY_PROXY_SLOT_PER_PROXY", True),
            log_interval=read_float(settings, "STICKY_PROXY_LOG_INTERVAL", 60.0, True)
            or 0.0,
            outage_backoff_max=read_float(
                settings, "STICKY_PROXY_OUTAGE_BACKOFF_MAX", 10.0
            )
            or 10.0,
            outage_timeout=read_float(settings, "STICKY_PROXY_OUTAGE_TIMEOUT", 600.0)
            or 600.0,
            probe_wait=read_float(settings, "STICKY_PROXY_PROBE_WAIT", 10.0) or 10.0,
            secrets=secrets,
        )

    def redact(self, text: str) -> str:
        """*text* with every configured password replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _statuses(settings: BaseSettings) -> frozenset[int]:
    name = "STICKY_PROXY_BAN_STATUSES"
    if settings.get(name) is None:
        return frozenset(DEFAULT_BAN_STATUSES)
    statuses = set()
    for value in read_list(settings, name):
        text = isinstance(value, str) and value.strip().isdecimal()
        status = whole_number(int(value) if text else value, 100, 599)
        if status is None:
            raise ConfigError(name, f"{shown(value)} is not an HTTP status (100-599)")
        if status == 407:
            raise ConfigError(
                name,
                "407 comes from the gateway (bad credentials), not from the "
                "target; it always stops the crawl and cannot be a ban status",
            )
        statuses.add(status)
    return frozenset(statuses)


def _exceptions(settings: BaseSettings) -> tuple[type[BaseException], ...]:
    name = "STICKY_PROXY_BAN_EXCEPTIONS"
    if settings.get(name) is None:
        found = []
        for path in DEFAULT_BAN_EXCEPTIONS:
            # Some of these names only exist in newer Scrapy versions.
            try:
                found.append(_load_class(path, name))
            except ConfigError:
                continue
        return tuple(found)
    classes = []
    for path in read_list(settings, name):
        cls = path if isinstance(path, type) else _load_class(path, name)
        if not issubclass(cls, BaseException):
            raise ConfigError(name, f"{path!r} is not an exception class")
        classes.append(cls)
    return tuple(classes)


def _redis_url(settings: BaseSettings) -> str:
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


# Client options that make sense for our connection; scrapy-redis's own
# defaults (30 s socket timeout) would hide a lost Redis for too long.
_REDIS_DEFAULTS = {"socket_timeout": 5, "socket_connect_timeout": 2}
_REDIS_IGNORED = {"redis_cls", "url", "encoding", "decode_responses"}


def _redis_params(settings: BaseSettings) -> dict[str, Any]:
    try:
        params = settings.getdict("REDIS_PARAMS")
    except (ValueError, TypeError):
        raise ConfigError("REDIS_PARAMS", "expected a dict") from None
    extra = {k: v for k, v in params.items() if k not in _REDIS_IGNORED}
    return {**_REDIS_DEFAULTS, **extra}


def _pool_policy(settings: BaseSettings) -> PoolPolicy:
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
        name = "BACKOFF_MAX" if "backoff" in str(exc) else "DEAD_AFTER"
        raise ConfigError(f"STICKY_PROXY_LIST_{name}", str(exc)) from None


def _weight(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not (math.isfinite(value) and 0 < value <= MAX_WEIGHT):
        return None
    return float(value)


def _load_class(path: str, name: str) -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(name, f"cannot import {path!r}: {exc}") from None
    if not isinstance(obj, type):
        raise ConfigError(name, f"{path!r} is not a class")
    return obj


def _static_list(value: Any) -> tuple[StaticProxy, ...]:
    name = "STICKY_PROXY_LIST"
    if value is None or value in ("", [], {}):
        return ()
    if isinstance(value, str):
        value = [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(url, 1.0) for url in value]
    else:
        raise ConfigError(name, "expected a list of proxy URLs or a {url: weight} dict")
    generic = get_preset("generic")
    proxies: list[StaticProxy] = []
    seen: dict[str, int] = {}
    for index, (url, raw_weight) in enumerate(items):
        weight = _weight(raw_weight)
        if weight is None:
            raise ConfigError(
                name,
                f"entry {index}: weight must be a positive number up to "
                f"{MAX_WEIGHT}, got {shown(raw_weight)}",
            )
        template = ProxyTemplate.parse(
            expand_env(url, name) if isinstance(url, str) else url,
            generic,
            None,
            setting=name,
            require_session=False,
        )
        proxy_id = template.hostport
        seen[proxy_id] = seen.get(proxy_id, 0) + 1
        if seen[proxy_id] > 1:
            # The same gateway with other accounts: keep ids distinct
            # without exposing the credentials.
            proxy_id = f"{proxy_id}#{seen[proxy_id]}"
        proxies.append(StaticProxy(proxy_id, template, weight))
    return tuple(proxies)
