"""The session pool settings: STICKY_PROXY_SESSION_POOL, _POOL_SIZE,
_POOL_SIZES, and the per-session download slots (STICKY_PROXY_SESSION_SLOTS,
_SLOT_CONCURRENCY, _SLOT_DELAY), parsed into a
:class:`~scrapy_sticky_proxy.routing.session_pools.SessionPoolPolicy`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..routing.session_pools import DEFAULT_SIZE, MAX_SIZE, SPANS, SessionPoolPolicy
from .readers import (
    json_text,
    read_bool,
    read_float,
    read_int,
    read_str,
    shown,
    whole_number,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

MAX_SLOT_CONCURRENCY = 1000
MAX_SLOT_DELAY = 3600.0
# A slot with no delay may send more than its concurrency at once: with
# the asyncio reactor, Scrapy's downloader (2.14 to 2.19, seen) takes
# every queued request off the slot before any of them counts as
# transferring. With a delay it takes one, and the next only once the delay
# is up, when the first one counts.
MIN_SLOT_DELAY = 0.001


POOL_SETTINGS = (
    "STICKY_PROXY_SESSION_POOL_SIZE",
    "STICKY_PROXY_SESSION_POOL_SIZES",
    "STICKY_PROXY_SESSION_SLOTS",
    "STICKY_PROXY_SESSION_SLOT_CONCURRENCY",
    "STICKY_PROXY_SESSION_SLOT_DELAY",
)


def session_pool_policy(settings: BaseSettings) -> SessionPoolPolicy:
    name = "STICKY_PROXY_SESSION_POOL"
    span = read_str(settings, name)
    if span is not None:
        span = span.strip().lower()
        if span not in SPANS:
            raise ConfigError(
                name, f"expected 'host', 'domain' or None, got {shown(span)}"
            )
    return SessionPoolPolicy(
        span=span,
        size=read_int(
            settings, "STICKY_PROXY_SESSION_POOL_SIZE", DEFAULT_SIZE, 1, MAX_SIZE
        )
        or DEFAULT_SIZE,
        sizes=_sizes(settings, "STICKY_PROXY_SESSION_POOL_SIZES"),
        slots=read_bool(settings, "STICKY_PROXY_SESSION_SLOTS", False),
        slot_concurrency=read_int(
            settings,
            "STICKY_PROXY_SESSION_SLOT_CONCURRENCY",
            1,
            1,
            MAX_SLOT_CONCURRENCY,
        )
        or 1,
        slot_delay=max(MIN_SLOT_DELAY, _slot_delay(settings)),
        idle=() if span else tuple(n for n in POOL_SETTINGS if settings.get(n)),
    )


def _slot_delay(settings: BaseSettings) -> float:
    """STICKY_PROXY_SESSION_SLOT_DELAY, or DOWNLOAD_DELAY as for any slot."""
    delay = read_float(
        settings,
        "STICKY_PROXY_SESSION_SLOT_DELAY",
        None,
        allow_zero=True,
        maximum=MAX_SLOT_DELAY,
    )
    if delay is not None:
        return delay
    try:
        return max(0.0, settings.getfloat("DOWNLOAD_DELAY"))
    except ValueError:
        return 0.0  # Scrapy's to report


def _sizes(settings: BaseSettings, name: str) -> Mapping[str, int]:
    """Pool name -> size: a dict, or a JSON object as text (``-s``)."""
    value: Any = settings.get(name)
    if value is None or value == "":
        return MappingProxyType({})
    if isinstance(value, str):
        value = json_text(
            name, value, 'is not valid JSON: write an object, {"example.com": 4}'
        )
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, f"expected a dict of pool name -> size, got {type(value).__name__}"
        )
    sizes = {}
    for pool, size in dict(value).items():
        number = whole_number(size, 1, MAX_SIZE)
        if not isinstance(pool, str) or not pool or number is None:
            raise ConfigError(
                name,
                f"expected pool names and sizes from 1 to {MAX_SIZE}, got "
                f"{shown(pool)}: {shown(size)}",
            )
        sizes[pool] = number
    return MappingProxyType(sizes)
