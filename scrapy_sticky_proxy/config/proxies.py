"""Where requests go: STICKY_PROXY_URL (a gateway, shaped by
STICKY_PROXY_PROVIDER and STICKY_PROXY_SESSION_LIFETIME) or STICKY_PROXY_LIST
(static proxies), parsed into proxy templates; and the passwords they hold,
which nothing may show."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..routing.location import LocationError, country_code
from ..routing.providers import ProviderSpec, get_preset
from ..routing.secrets import longest_first
from ..routing.template import ProxyTemplate
from .readers import WEEK, expand_env, read_int, read_str, shown

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

MAX_WEIGHT = 1_000_000
# A text value is split at line ends, and at commas that start another URL
# (Scrapy's getlist splits at every comma, but a password may hold one).
_SPLIT_RE = re.compile(r"[\r\n]+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


@dataclass(frozen=True)
class StaticProxy:
    """One entry of STICKY_PROXY_LIST. ``id`` (host:port) is what logs,
    stats, download slots and shared stores see; never the URL."""

    id: str
    template: ProxyTemplate
    weight: float = 1.0


def read_proxies(
    settings: BaseSettings, enabled: bool, *, require: bool
) -> tuple[ProviderSpec, ProxyTemplate | None, tuple[StaticProxy, ...]]:
    """The provider, the gateway and the static proxies. With *require*,
    an enabled package with neither a gateway nor a list is an error."""
    provider = get_preset(read_str(settings, "STICKY_PROXY_PROVIDER") or "generic")
    lifetime = read_int(settings, "STICKY_PROXY_SESSION_LIFETIME", None, 0, WEEK)
    url = read_str(settings, "STICKY_PROXY_URL") or os.environ.get("STICKY_PROXY_URL")
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
    gateway = ProxyTemplate.parse(url, provider, lifetime) if url else None
    _check_encoding(settings, gateway, static)
    if require:
        check_given(enabled, gateway, static)
    return provider, gateway, static


def read_country(settings: BaseSettings, templates: list[ProxyTemplate]) -> str | None:
    """STICKY_PROXY_COUNTRY: a country code that every route can write."""
    value = settings.get("STICKY_PROXY_COUNTRY")
    if value is None or value == "":
        return None
    try:
        code = country_code(value)
        for template in templates:
            template.located(code)
    except LocationError as exc:
        raise ConfigError("STICKY_PROXY_COUNTRY", str(exc)) from None
    return code


def check_given(
    enabled: bool, gateway: ProxyTemplate | None, static: tuple[StaticProxy, ...]
) -> None:
    """An enabled package needs somewhere to send requests."""
    if enabled and gateway is None and not static:
        raise ConfigError(
            "STICKY_PROXY_URL",
            "not set: give your gateway URL (http://user:pass@host:port), "
            "or STICKY_PROXY_LIST, or STICKY_PROXY_PROVIDER = 'sandbox' "
            "for the offline sandbox",
        )


def _check_encoding(
    settings: BaseSettings,
    gateway: ProxyTemplate | None,
    static: tuple[StaticProxy, ...],
) -> None:
    """Credentials that HTTPPROXY_AUTH_ENCODING (Scrapy's, for the
    Proxy-Authorization value) cannot write would fail every request."""
    name = "HTTPPROXY_AUTH_ENCODING"
    encoding = settings.get(name) or "latin-1"
    try:
        "".encode(encoding)
    except (LookupError, TypeError):
        raise ConfigError(
            name, f"{shown(encoding)} is not a text encoding (e.g. 'latin-1', 'utf-8')"
        ) from None
    templates = [("STICKY_PROXY_LIST", p.template) for p in static]
    if gateway is not None:
        templates.append(("STICKY_PROXY_URL", gateway))
    for setting, template in templates:
        part = template.unencodable(encoding)
        if part is not None:
            default = ", Scrapy's default" if settings.getpriority(name) == 0 else ""
            raise ConfigError(
                setting,
                f"the {part} of {template.hostport} has characters that "
                f"{name} ({encoding}{default}) cannot encode, so every request "
                f"through it would fail: set {name} = 'utf-8' if the proxy "
                f"reads credentials as UTF-8, or use a {part} without them",
            )


def secrets_of(templates: list[ProxyTemplate]) -> tuple[str, ...]:
    """Every template's secrets, longest first: one password may hold
    another, which replaced first would leave the rest of the longer."""
    return longest_first(s for template in templates for s in template.secrets)


def _weight(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # Compared before any float(): float(10**400) raises; NaN compares False.
    if not 0 < value <= MAX_WEIGHT:
        return None
    return float(value)


def _from_text(text: str) -> Any:
    """STICKY_PROXY_LIST given as text (``-s``, Scrapyd's ``-d setting=``,
    an environment variable): JSON, as Scrapy's getdict/getdictorlist read
    it, or URLs separated by line ends or commas."""
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            where = (
                f" ({exc.msg} at line {exc.lineno} column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise ConfigError(
                "STICKY_PROXY_LIST",
                f"starts with {text[0]!r} but is not valid JSON{where}: write a "
                'JSON list of proxy URLs (["http://user:pass@host:port", ...]) or '
                'a JSON object of weights ({"http://user:pass@host:port": 2, ...}), '
                "with double quotes",
            ) from None
    return [part.strip() for part in _SPLIT_RE.split(text) if part.strip()]


def _static_list(value: Any) -> tuple[StaticProxy, ...]:
    name = "STICKY_PROXY_LIST"
    if value is None or value in ("", [], {}):
        return ()
    if isinstance(value, str):
        value = _from_text(value.strip())
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
        try:
            template = ProxyTemplate.parse(
                expand_env(url, name) if isinstance(url, str) else url,
                generic,
                None,
                setting=name,
                require_session=False,
            )
        except ConfigError as error:  # which of the list's URLs
            problem = str(error).removeprefix(f"{name}: ")
            raise ConfigError(name, f"entry {index}: {problem}") from None
        proxy_id = template.hostport
        seen[proxy_id] = seen.get(proxy_id, 0) + 1
        if seen[proxy_id] > 1:
            # The same gateway with other accounts: keep ids distinct
            # without exposing the credentials.
            proxy_id = f"{proxy_id}#{seen[proxy_id]}"
        proxies.append(StaticProxy(proxy_id, template, weight))
    return tuple(proxies)
