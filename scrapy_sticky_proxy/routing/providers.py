"""Provider presets: where each provider reads the session id.

A :class:`ProviderSpec` says where a provider reads the session id (and the
session lifetime) from the proxy credentials and which ids it accepts;
:func:`place_session` writes them there, for a URL without a ``{session}``
placeholder. The URL itself is checked and split by :mod:`.template`.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..errors import ConfigError
from .ids import ALNUM, IdRules
from .location import LOCATION, PACKETSTREAM_NAMES, Place
from .proxyurl import Fail

LIFETIME_SETTING = "STICKY_PROXY_SESSION_LIFETIME"
SESSION = "{session}"
LIFETIME = "{lifetime}"
LifetimeUnit = Literal["seconds", "minutes", "compact"]


@dataclass(frozen=True)
class ProviderSpec:
    """Where a provider reads the session id from the proxy credentials.

    When the URL has no ``{session}`` placeholder, ``session_format`` (with the
    id in place of ``{session}``) is appended to the credential named by
    *part*, followed by ``lifetime_format`` when a lifetime is set; with
    *replace* the credential is the id itself (Tor). ``part=None`` means the
    URL must carry ``{session}`` (generic). The lifetime, given in seconds, is
    written in *lifetime_unit*: ``seconds``, ``minutes`` or ``compact`` (one
    unit: ``90s``, ``10m``, ``2h``, ``7d``); *lifetime_min* and *lifetime_max*
    are in that unit (seconds for ``compact``), ``None`` for no maximum.
    *gateway* is the provider's documented plain-http ``host:port``, for hints.
    *places* say where it reads a location (:mod:`.location`): written just
    before the session id, when a request asks for one.
    """

    name: str
    id_rules: IdRules
    part: Literal["username", "password"] | None = "username"
    session_format: str = "-session-{session}"
    replace: bool = False
    lifetime_format: str | None = None
    lifetime_unit: LifetimeUnit = "seconds"
    lifetime_min: int = 1
    lifetime_max: int | None = None
    default_password: str | None = None
    gateway: str | None = None
    places: tuple[Place, ...] = ()


_COUNTRY = (Place("country", "-country-{}"),)  # lower case: -country-us
_PS_COUNTRY = (Place("country", "_country-{}", "names", PACKETSTREAM_NAMES),)
_ALNUM32 = IdRules(ALNUM, 1, 32)
_PRESET_LIST = (
    ProviderSpec("generic", IdRules(ALNUM, 1, 64), part=None, session_format=""),
    ProviderSpec("packetstream", _ALNUM32, "password", "_session-{session}",
                 gateway="proxy.packetstream.io:31112",
                 places=_PS_COUNTRY),
    ProviderSpec("brightdata", _ALNUM32, gateway="brd.superproxy.io:33335",
                 places=_COUNTRY),
    ProviderSpec("oxylabs", _ALNUM32, session_format="-sessid-{session}",
                 lifetime_format="-sesstime-{lifetime}", lifetime_unit="minutes",
                 lifetime_max=1440, gateway="pr.oxylabs.io:7777",
                 places=(Place("country", "-cc-{}", "upper"),)),
    ProviderSpec("decodo", _ALNUM32, lifetime_format="-sessionduration-{lifetime}",
                 lifetime_unit="minutes", lifetime_max=1440,
                 gateway="gate.decodo.com:7000", places=_COUNTRY),
    ProviderSpec("iproyal", IdRules(ALNUM, 8, 8), "password", "_session-{session}",
                 lifetime_format="_lifetime-{lifetime}", lifetime_unit="compact",
                 lifetime_max=7 * 86400, gateway="geo.iproyal.com:12321",
                 places=(Place("country", "_country-{}"),)),
    ProviderSpec("soax", _ALNUM32, session_format="-sessionid-{session}",
                 lifetime_format="-sessionlength-{lifetime}", lifetime_min=0,
                 lifetime_max=86400, gateway="proxy.soax.com:5000", places=_COUNTRY),
    ProviderSpec("netnut", _ALNUM32, session_format="-sid-{session}",
                 gateway="gw.netnut.net:5959", places=(Place("country", "-res-{}"),)),
    ProviderSpec("geonode", IdRules(ALNUM + "_", 1, 25),
                 lifetime_format="-lifetime-{lifetime}", lifetime_unit="minutes",
                 lifetime_min=3, lifetime_max=1440, gateway="proxy.geonode.io:10000",
                 places=_COUNTRY),
    # Tor: the username is the id; IsolateSOCKSAuth gives each its own circuit.
    ProviderSpec("tor", IdRules(ALNUM, 1, 64), session_format=SESSION, replace=True,
                 default_password="x", gateway="127.0.0.1:9080"),  # noqa: S106
    ProviderSpec("sandbox", _ALNUM32, lifetime_format="-lifetime-{lifetime}",
                 lifetime_max=86400, places=_COUNTRY),
)  # fmt: skip
_BY_NAME = {spec.name: spec for spec in _PRESET_LIST}
PRESETS: Mapping[str, ProviderSpec] = MappingProxyType(
    {**_BY_NAME, "smartproxy": _BY_NAME["decodo"]}
)


def get_preset(name: str) -> ProviderSpec:
    """The preset called *name* (case, spaces, ``-`` and ``_`` ignored)."""
    spec = None
    if isinstance(name, str):
        spec = PRESETS.get(re.sub(r"[\s_-]", "", name).lower())
    if spec is None:
        raise ConfigError(
            "STICKY_PROXY_PROVIDER",
            f"unknown provider {name!r}; choose one of: {', '.join(sorted(PRESETS))}",
        )
    return spec


# -- lifetime -------------------------------------------------------------------


def _compact(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def lifetime_text(spec: ProviderSpec, seconds: object) -> str:
    """*seconds* written as *spec* wants it; ConfigError if it does not fit."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ConfigError(LIFETIME_SETTING, "must be a whole number of seconds")
    scale = 60 if spec.lifetime_unit == "minutes" else 1
    if seconds % scale:
        raise ConfigError(
            LIFETIME_SETTING,
            f"{spec.name} counts session lifetime in minutes; {seconds} seconds "
            "is not a whole number of minutes",
        )
    value, lo, hi = seconds // scale, spec.lifetime_min, spec.lifetime_max
    if value < lo or (hi is not None and value > hi):
        top = "no limit" if hi is None else hi * scale
        raise ConfigError(
            LIFETIME_SETTING,
            f"{seconds} seconds is out of range for {spec.name}: use {lo * scale} to "
            f"{top} seconds" + (" (whole minutes)" if scale > 1 else ""),
        )
    return _compact(value) if spec.lifetime_unit == "compact" else str(value)


def place_session(
    spec: ProviderSpec, cred: tuple[str, str, str], *, lifetime: int | None,
    hostport: str, fail: Fail, located: bool = False,
) -> tuple[str, str, str]:  # fmt: skip
    """Append (or write) the {session} marker where *spec* puts it, after
    the {location} marker when *located*."""
    user, colon, pw = cred
    if spec.part is None:
        others = ", ".join(sorted(set(PRESETS) - {spec.name}))
        raise fail(
            "has no {session} placeholder: add {session} where your provider expects "
            f"the session id (e.g. http://user-session-{{session}}:pass@{hostport}), "
            f"or pick a STICKY_PROXY_PROVIDER preset ({others})"
        )
    added = (LOCATION if located else "") + spec.session_format
    if lifetime is not None:
        if spec.lifetime_format is None:
            raise ConfigError(
                LIFETIME_SETTING,
                f"is set but the {spec.name} preset has no lifetime parameter; unset "
                "it, or use a {session}/{lifetime} template in the proxy URL",
            )
        text = lifetime_text(spec, lifetime)
        added += spec.lifetime_format.replace(LIFETIME, text)
    if spec.replace:
        return added, ":", pw or spec.default_password or ""
    missing = "username" if spec.part == "username" and not user else ""
    if spec.part == "password" and not pw:
        missing = "password"
    if missing:
        raise fail(
            f"the {spec.name} preset appends the session id to the {missing}, but the "
            f"URL has no {missing} (expected http://USERNAME:PASSWORD@{hostport})"
        )
    if spec.part == "username":
        return user + added, colon, pw
    return user, ":", pw + added
