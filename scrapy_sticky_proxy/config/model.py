"""The configuration object: every STICKY_PROXY_* setting, read and
validated once into a frozen :class:`StickyProxyConfig`.

``StickyProxyConfig.from_settings`` turns Scrapy settings into that object;
the parsing of each group lives next to it (:mod:`.proxies`,
:mod:`.ban_rules`, :mod:`.shared`, :mod:`.readers`). A bad value raises
:class:`~scrapy_sticky_proxy.errors.ConfigError`, whose message starts with
the setting's name and never holds a password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..routing.health import PoolPolicy
from ..routing.providers import ProviderSpec, get_preset
from ..routing.secrets import redact
from ..routing.session_pools import SessionPoolPolicy
from ..routing.template import ProxyTemplate
from ..routing.tiers import TierPolicy
from ..routing.tolerance import MAX_TOLERANCE, TolerancePolicy
from ..routing.warmup import WarmupPolicy
from ..state.store import DEFAULT_MAX_KEYS, Rotation
from .ban_rules import DEFAULT_BAN_STATUSES, ban_exceptions, ban_patterns, ban_statuses
from .callables import ban_policy, key_function
from .connections import (
    DEFAULT_CONNECTIONS_PER_SESSION,
    DEFAULT_POOL_MAX_IDLE,
    connections_per_session,
    pool_max_idle,
)
from .files import read_append_file
from .names import check_names
from .proxies import StaticProxy, check_given, read_country, secrets_of
from .readers import (
    DOTTED,
    MAX_REROLLS,
    check_scrapy_flags,
    dotted_path,
    read_bool,
    read_dotted_paths,
    read_float,
    read_int,
    read_list,
    read_str,
    shown,
)
from .session_pools import session_pool_policy
from .shared import (
    DEFAULT_NAMESPACE,
    check_redis,
    namespace,
    pool_policy,
    redis_params,
    redis_url,
    share_cookies,
)
from .tiers import ProxyTier, every_template, read_routes, tier_policy
from .warmup import warmup_policy

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

BACKENDS = ("memory", "redis")
# Upper bounds of numeric settings: past these a value is a typo, and an
# unbounded one can keep a request (or the crawl) going forever.
MAX_REDIS_TTL = 30 * 86400
MAX_KEYS = 100_000_000
DEFAULT_COOKIE_JARS = 10_000  # about 15 MB of jars holding a cookie each
DEFAULT_PLAYWRIGHT_CONTEXTS = 32
MAX_PLAYWRIGHT_CONTEXTS = 10_000
DEFAULT_PLAYWRIGHT_IDLE = 120.0
# Lower bounds of periods: below these a loop spins (18 progress lines in
# 0.2 s; a refusing gateway probed back to back).
MIN_LOG_INTERVAL = 1.0
MIN_OUTAGE_BACKOFF = 0.1
MAX_RETRY_AFTER = 3600.0  # a request waits for its session at most an hour


@dataclass(frozen=True)
class StickyProxyConfig:
    """Every STICKY_PROXY_* setting of one crawler, parsed (see
    docs/reference/settings.md for each one's meaning and default)."""

    enabled: bool = True
    provider: ProviderSpec = field(default_factory=lambda: get_preset("generic"))
    gateway: ProxyTemplate | None = None
    static_proxies: tuple[StaticProxy, ...] = ()
    tiers: tuple[ProxyTier, ...] = ()  # STICKY_PROXY_TIERS; above: tier 1's
    tier_policy: TierPolicy = field(default_factory=TierPolicy)
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    pool_policy: PoolPolicy = field(default_factory=PoolPolicy)
    key_func: Callable[[Any], str] | None = None
    session_pools: SessionPoolPolicy = field(default_factory=SessionPoolPolicy)
    max_rerolls: int = 5
    tolerance: TolerancePolicy = field(default_factory=TolerancePolicy)
    ban_statuses: frozenset[int] = frozenset(DEFAULT_BAN_STATUSES)
    ban_patterns: tuple[re.Pattern[bytes], ...] = ()
    ban_exceptions: tuple[type[BaseException], ...] = ()
    ban_policy_cls: type | None = None
    backend: str = "memory"
    # Not in repr(): a BanPolicy of the user's gets the config, and may log it.
    redis_url: str | None = field(default=None, repr=False)
    redis_params: dict[str, Any] = field(default_factory=dict, repr=False)
    redis_ttl: int = 86400
    namespace: str = DEFAULT_NAMESPACE
    rotation: Rotation = field(default_factory=Rotation)
    max_keys: int = DEFAULT_MAX_KEYS
    gave_up_file: str | None = None
    inherit_key: bool = False
    slot_per_proxy: bool = True
    log_interval: float = 60.0
    outage_backoff_max: float = 10.0
    outage_timeout: float = 600.0
    probe_wait: float = 10.0
    unreachable_timeout: float = 30.0
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # Read by the download handlers, the wiring check and the serializer.
    pool_max_idle: int = DEFAULT_POOL_MAX_IDLE
    connections_per_session: int = DEFAULT_CONNECTIONS_PER_SESSION
    playwright_max_contexts: int = DEFAULT_PLAYWRIGHT_CONTEXTS
    playwright_idle_timeout: float = DEFAULT_PLAYWRIGHT_IDLE
    allow_handlers: frozenset[str] = frozenset()
    allow_shared_connections: bool = False
    serializer_classes: tuple[str, ...] = ()
    # Cookies per session (COOKIES_ENABLED and STICKY_PROXY_COOKIES_PER_SESSION).
    cookie_jars: bool = True
    max_cookie_jars: int = DEFAULT_COOKIE_JARS
    share_cookies: bool = False
    warmup: WarmupPolicy | None = None  # STICKY_PROXY_WARMUP and its settings

    @classmethod
    def from_settings(
        cls, settings: BaseSettings, *, require_proxy: bool = True
    ) -> StickyProxyConfig:
        """*require_proxy*: an enabled package without STICKY_PROXY_URL or
        STICKY_PROXY_LIST is an error (False for components that route no
        request, such as the download handlers)."""
        check_names(settings)  # first: a misspelt name explains what follows
        check_scrapy_flags(settings)
        enabled = read_bool(settings, "STICKY_PROXY_ENABLED", True)
        provider, gateway, static, tiers = read_routes(
            settings, enabled, require=require_proxy
        )
        templates = every_template(gateway, static, tiers)
        backend = (read_str(settings, "STICKY_PROXY_BACKEND") or "memory").lower()
        if backend not in BACKENDS:
            raise ConfigError(
                "STICKY_PROXY_BACKEND",
                f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}",
            )
        url, params = redis_url(settings), redis_params(settings)
        # Checks that touch the machine or run the user's code only when the
        # package is on: a disabled one must start wherever it is installed.
        if backend == "redis" and enabled:
            check_redis(url, params)
        return cls(
            enabled=enabled,
            provider=provider,
            gateway=gateway,
            static_proxies=static,
            tiers=tiers,
            tier_policy=tier_policy(settings),
            country=read_country(settings, templates),
            pool_policy=pool_policy(settings),
            key_func=key_function(settings) if enabled else None,
            session_pools=session_pool_policy(settings),
            max_rerolls=read_int(
                settings, "STICKY_PROXY_MAX_REROLLS", 5, 0, MAX_REROLLS
            )
            or 0,
            tolerance=tolerance_policy(settings),
            ban_statuses=ban_statuses(settings),
            ban_patterns=ban_patterns(settings),
            ban_exceptions=ban_exceptions(settings),
            ban_policy_cls=ban_policy(settings),
            backend=backend,
            redis_url=url,
            redis_params=params,
            redis_ttl=read_int(
                settings, "STICKY_PROXY_REDIS_TTL", 86400, 1, MAX_REDIS_TTL
            )
            or 86400,
            namespace=namespace(settings),
            rotation=Rotation(
                max_age=read_float(settings, "STICKY_PROXY_SESSION_MAX_AGE", None),
                max_uses=read_int(settings, "STICKY_PROXY_SESSION_MAX_USES", None, 1),
            ),
            max_keys=read_int(
                settings, "STICKY_PROXY_MAX_KEYS", DEFAULT_MAX_KEYS, 1, MAX_KEYS
            )
            or DEFAULT_MAX_KEYS,
            gave_up_file=read_append_file(settings, "STICKY_PROXY_GAVE_UP_FILE")
            if enabled
            else None,
            inherit_key=read_bool(settings, "STICKY_PROXY_INHERIT_KEY", False),
            slot_per_proxy=read_bool(settings, "STICKY_PROXY_SLOT_PER_PROXY", True),
            log_interval=read_float(
                settings,
                "STICKY_PROXY_LOG_INTERVAL",
                60.0,
                allow_zero=True,
                minimum=MIN_LOG_INTERVAL,
            )
            or 0.0,
            outage_backoff_max=read_float(
                settings,
                "STICKY_PROXY_OUTAGE_BACKOFF_MAX",
                10.0,
                minimum=MIN_OUTAGE_BACKOFF,
            )
            or 10.0,
            outage_timeout=read_float(settings, "STICKY_PROXY_OUTAGE_TIMEOUT", 600.0)
            or 600.0,
            probe_wait=read_float(settings, "STICKY_PROXY_PROBE_WAIT", 10.0) or 10.0,
            unreachable_timeout=read_float(
                settings, "STICKY_PROXY_UNREACHABLE_TIMEOUT", 30.0
            )
            or 30.0,
            secrets=secrets_of(templates),
            pool_max_idle=pool_max_idle(settings),
            connections_per_session=connections_per_session(settings),
            playwright_max_contexts=read_int(
                settings,
                "STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS",
                DEFAULT_PLAYWRIGHT_CONTEXTS,
                1,
                MAX_PLAYWRIGHT_CONTEXTS,
            )
            or DEFAULT_PLAYWRIGHT_CONTEXTS,
            playwright_idle_timeout=read_float(
                settings,
                "STICKY_PROXY_PLAYWRIGHT_IDLE_TIMEOUT",
                DEFAULT_PLAYWRIGHT_IDLE,
                allow_zero=True,
            )
            or 0.0,
            allow_handlers=allowed_handlers(settings),
            allow_shared_connections=read_bool(
                settings, "STICKY_PROXY_ALLOW_SHARED_CONNECTIONS", False
            ),
            serializer_classes=read_dotted_paths(
                settings, "STICKY_PROXY_SERIALIZER_CLASSES"
            ),
            cookie_jars=read_bool(settings, "STICKY_PROXY_COOKIES_PER_SESSION", True)
            and settings.getbool("COOKIES_ENABLED", True),  # checked above
            max_cookie_jars=read_int(
                settings,
                "STICKY_PROXY_MAX_COOKIE_JARS",
                DEFAULT_COOKIE_JARS,
                1,
                MAX_KEYS,
            )
            or DEFAULT_COOKIE_JARS,
            share_cookies=share_cookies(settings, backend),
            warmup=warmup_policy(settings, enabled),
        )

    def check_proxy_given(self) -> None:
        """Raise the error ``from_settings`` raises with ``require_proxy``
        when there is nowhere to send requests."""
        check_given(self.enabled, self.gateway, self.static_proxies)

    def redact(self, text: str) -> str:
        """*text* with every configured password replaced by ``***``."""
        return redact(text, self.secrets)


def tolerance_policy(settings: BaseSettings) -> TolerancePolicy:
    wait_max = read_float(
        settings, "STICKY_PROXY_RETRY_AFTER_MAX", 60.0, maximum=MAX_RETRY_AFTER
    )
    return TolerancePolicy(
        read_int(settings, "STICKY_PROXY_BAN_TOLERANCE", 1, 1, MAX_TOLERANCE) or 1,
        read_float(settings, "STICKY_PROXY_TOLERANCE_BACKOFF", 1.0, minimum=0.01)
        or 1.0,
        wait_max or 60.0,
    )


def allowed_handlers(settings: BaseSettings) -> frozenset[str]:
    """STICKY_PROXY_ALLOW_HANDLERS: download handlers (classes or their
    dotted paths) the user vouches for, as dotted paths."""
    name = "STICKY_PROXY_ALLOW_HANDLERS"
    handlers = read_list(settings, name)
    for handler in handlers:
        if not isinstance(handler, type) and not (
            isinstance(handler, str) and DOTTED.fullmatch(handler)
        ):
            raise ConfigError(
                name, f"expected classes or dotted paths, got {shown(handler)}"
            )
    return frozenset(dotted_path(h) for h in handlers)
