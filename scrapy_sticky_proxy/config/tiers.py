"""STICKY_PROXY_TIERS: an ordered list of proxy tiers (gateways or static
lists, each with its own provider), and STICKY_PROXY_TIER_WINDOW,
STICKY_PROXY_TIER_BAN_RATE and STICKY_PROXY_TIER_QUIET, which say when a
site moves between them (:mod:`..routing.tiers`).

Without STICKY_PROXY_TIERS there is one tier, STICKY_PROXY_URL or
STICKY_PROXY_LIST, as before. With it, the configuration's ``provider``,
``gateway`` and ``static_proxies`` are tier 1's, and ``tiers`` holds them
all; every tier is checked as STICKY_PROXY_URL or STICKY_PROXY_LIST are.
Tiers may go through the same host:port (one gateway, a zone or product in
the username): route ids above tier 1 end in ``#t<n>``
(:func:`..routing.tiers.tier_route`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..routing.providers import ProviderSpec, get_preset
from ..routing.template import ProxyTemplate
from ..routing.tiers import MAX_TIERS, TierPolicy, tier_route
from .proxies import StaticProxy, _check_encoding, _static_list, read_proxies
from .readers import (
    WEEK,
    expand_env,
    json_text,
    read_float,
    read_int,
    read_str,
    shown,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

NAME = "STICKY_PROXY_TIERS"
MAX_WINDOW = 100_000
TIER_KEYS = frozenset(("url", "list", "provider"))


@dataclass(frozen=True)
class ProxyTier:
    """Tier *number*: a gateway or a list of static proxies (their ids
    already the tier's), and its provider."""

    number: int
    provider: ProviderSpec
    gateway: ProxyTemplate | None
    static_proxies: tuple[StaticProxy, ...]

    @property
    def templates(self) -> list[ProxyTemplate]:
        gateway = [] if self.gateway is None else [self.gateway]
        return gateway + [p.template for p in self.static_proxies]

    @property
    def routes(self) -> list[str]:
        """Its route ids: the gateway's, or the static proxies'."""
        if self.gateway is not None:
            return [tier_route(self.gateway.hostport, self.number)]
        return [p.id for p in self.static_proxies]


def read_routes(
    settings: BaseSettings, enabled: bool, *, require: bool
) -> tuple[
    ProviderSpec, ProxyTemplate | None, tuple[StaticProxy, ...], tuple[ProxyTier, ...]
]:
    """The provider, gateway and static proxies of tier 1, and every tier
    (none without STICKY_PROXY_TIERS)."""
    value = settings.get(NAME)
    if value is None or value in ("", [], ()):
        return (*read_proxies(settings, enabled, require=require), ())
    for other in ("STICKY_PROXY_URL", "STICKY_PROXY_LIST"):
        if settings.get(other) not in (None, "", [], (), {}):
            raise ConfigError(
                NAME, f"set either {NAME} or {other}, not both ({other} is a tier)"
            )
    if isinstance(value, str):
        value = json_text(NAME, value, "text that is not a JSON list of tiers")
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_TIERS:
        got = (
            f"{len(value)} tiers"
            if isinstance(value, (list, tuple))
            else f'a {type(value).__name__}: write a list, [{{"url": ...}}, ...]'
        )
        raise ConfigError(NAME, f"expected a list of 1 to {MAX_TIERS} tiers, got {got}")
    default = read_str(settings, "STICKY_PROXY_PROVIDER") or "generic"
    lifetime = read_int(settings, "STICKY_PROXY_SESSION_LIFETIME", None, 0, WEEK)
    tiers = tuple(
        _tier(settings, n, entry, default, lifetime) for n, entry in enumerate(value, 1)
    )
    first = tiers[0]
    return first.provider, first.gateway, first.static_proxies, tiers


def _url_like(text: str) -> bool:
    return "@" in text or "://" in text


def _tier(
    settings: BaseSettings, n: int, entry: object, default: str, lifetime: int | None
) -> ProxyTier:
    if isinstance(entry, Mapping) and (unknown := set(entry) - TIER_KEYS):
        # A proxy URL as a key ({url: weight}, as STICKY_PROXY_LIST takes)
        # is not quoted: its password may hold what hides it in text.
        names = sorted("<a URL>" if _url_like(k) else k for k in map(str, unknown))
        raise ConfigError(
            NAME,
            f"tier {n}: unknown key(s) {shown(names)}; "
            "a tier has 'url' or 'list', and may have 'provider' "
            "({'url': URL}, not {URL: weight})",
        )
    if not isinstance(entry, Mapping) or (("url" in entry) == ("list" in entry)):
        raise ConfigError(NAME, f"tier {n}: a dict with either 'url' or 'list'")
    name = entry.get("provider") or default
    try:
        provider = get_preset(name)
        if "url" in entry:
            url = entry["url"]
            if not isinstance(url, str) or not url:
                raise ConfigError(NAME, "'url' must be a proxy URL")
            url = expand_env(url, NAME)
            gateway = ProxyTemplate.parse(url, provider, lifetime, setting=NAME)
            static: tuple[StaticProxy, ...] = ()
        else:
            gateway, static = None, _static_list(entry["list"])
            if not static:
                raise ConfigError(NAME, "'list' is empty")
        _check_encoding(settings, gateway, static)
        static = tuple(replace(p, id=tier_route(p.id, n)) for p in static)
        return ProxyTier(n, provider, gateway, static)
    except ConfigError as exc:  # said as the tier's: "STICKY_PROXY_TIERS: tier 2: ..."
        problem = str(exc).removeprefix(f"{exc.setting}: ")
        raise ConfigError(NAME, f"tier {n} ({exc.setting}): {problem}") from None


def every_template(
    gateway: ProxyTemplate | None,
    static: tuple[StaticProxy, ...],
    tiers: tuple[ProxyTier, ...],
) -> list[ProxyTemplate]:
    """Every route's template, of every tier (for checks and secrets)."""
    if tiers:
        return [template for tier in tiers for template in tier.templates]
    return [*([] if gateway is None else [gateway]), *(p.template for p in static)]


def tier_policy(settings: BaseSettings) -> TierPolicy:
    default = TierPolicy()
    window = read_int(settings, "STICKY_PROXY_TIER_WINDOW", None, 1, MAX_WINDOW)
    quiet = read_float(settings, "STICKY_PROXY_TIER_QUIET", None)
    return TierPolicy(
        window or default.window, _ban_rate(settings), quiet or default.quiet
    )


def _ban_rate(settings: BaseSettings) -> float:
    name = "STICKY_PROXY_TIER_BAN_RATE"
    value = settings.get(name)
    if value is None or value == "":
        return TierPolicy.ban_rate
    try:
        rate = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # float(10**400) overflows
        rate = math.nan
    if not 0 < rate <= 1:  # NaN included
        raise ConfigError(name, f"a fraction above 0, at most 1; got {shown(value)}")
    return rate
