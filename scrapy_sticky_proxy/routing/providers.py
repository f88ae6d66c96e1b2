"""Provider presets and proxy URL templates.

A :class:`ProviderSpec` says where a provider reads the session id (and the
session lifetime) from the proxy credentials and which ids it accepts. A
:class:`ProxyTemplate` is one validated proxy URL, split once at parse time so
that :meth:`ProxyTemplate.render` is a single string join per request.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal
from urllib.parse import quote, unquote

from ..errors import ConfigError
from .ids import ALNUM, IdRules
from .proxyurl import Fail, split_proxy_url

__all__ = [
    "LIFETIME_SETTING",
    "PLACEHOLDERS",
    "PRESETS",
    "ProviderSpec",
    "ProxyTemplate",
    "get_preset",
]

LIFETIME_SETTING = "STICKY_PROXY_SESSION_LIFETIME"
PLACEHOLDERS = ("{session}", "{lifetime}")
LifetimeUnit = Literal["seconds", "minutes", "compact"]
_SESSION = "{session}"
_LIFETIME = "{lifetime}"


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


_ALNUM32 = IdRules(ALNUM, 1, 32)
_SESSION_SUFFIX = "-session-{session}"
_PRESET_LIST = (
    ProviderSpec("generic", IdRules(ALNUM, 1, 64), part=None, session_format=""),
    ProviderSpec("packetstream", _ALNUM32, "password", "_session-{session}",
                 gateway="proxy.packetstream.io:31112"),
    ProviderSpec("brightdata", _ALNUM32, gateway="brd.superproxy.io:33335"),
    ProviderSpec("oxylabs", _ALNUM32, session_format="-sessid-{session}",
                 lifetime_format="-sesstime-{lifetime}", lifetime_unit="minutes",
                 lifetime_max=1440, gateway="pr.oxylabs.io:7777"),
    ProviderSpec("decodo", _ALNUM32, lifetime_format="-sessionduration-{lifetime}",
                 lifetime_unit="minutes", lifetime_max=1440,
                 gateway="gate.decodo.com:7000"),
    ProviderSpec("iproyal", IdRules(ALNUM, 8, 8), "password", "_session-{session}",
                 lifetime_format="_lifetime-{lifetime}", lifetime_unit="compact",
                 lifetime_max=7 * 86400, gateway="geo.iproyal.com:12321"),
    ProviderSpec("soax", _ALNUM32, session_format="-sessionid-{session}",
                 lifetime_format="-sessionlength-{lifetime}", lifetime_min=0,
                 lifetime_max=86400, gateway="proxy.soax.com:5000"),
    ProviderSpec("netnut", _ALNUM32, session_format="-sid-{session}",
                 gateway="gw.netnut.net:5959"),
    ProviderSpec("geonode", IdRules(ALNUM + "_", 1, 25),
                 lifetime_format="-lifetime-{lifetime}", lifetime_unit="minutes",
                 lifetime_min=3, lifetime_max=1440, gateway="proxy.geonode.io:10000"),
    # Tor: the username is the id; IsolateSOCKSAuth gives each its own circuit.
    ProviderSpec("tor", IdRules(ALNUM, 1, 64), session_format=_SESSION, replace=True,
                 default_password="x", gateway="127.0.0.1:9080"),  # noqa: S106
    ProviderSpec("sandbox", _ALNUM32, lifetime_format="-lifetime-{lifetime}",
                 lifetime_max=86400),
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


def _lifetime_text(spec: ProviderSpec, seconds: object) -> str:
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


# -- proxy URL templates --------------------------------------------------------

_TOKEN_RE = re.compile(r"\{([^{}]*)\}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")
#: Kept as written in the userinfo; everything else is percent-encoded
#: (``@``, ``[``, non-ASCII...), which ``unquote`` undoes.
_USERINFO_SAFE = "!$&'()*+,;=:%"


@dataclass(frozen=True, repr=False)
class ProxyTemplate:
    """A validated proxy URL, ready to take a session id.

    *password* is the user's secret in unquoted form (for a password holding
    placeholders, its literal text before the first one), ``None`` when there
    is none; :attr:`secrets` and :meth:`redact` also cover its escaped form.
    ``repr()`` and ``str()`` never show credentials.
    """

    hostport: str
    scheme: str = "http"
    password: str | None = None
    provider: str = "generic"
    id_rules: IdRules = PRESETS["generic"].id_rules
    segments: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.segments:
            object.__setattr__(self, "segments", (f"{self.scheme}://{self.hostport}",))

    @property
    def has_session(self) -> bool:
        """Whether the rendered URL depends on the session id."""
        return len(self.segments) > 1

    def render(self, session_id: str) -> str:
        """The full proxy URL, credentials included, for *session_id*.

        *session_id* must fit :attr:`id_rules` (use ``ids.session_id``).
        """
        return session_id.join(self.segments)

    @property
    def endpoint(self) -> str:
        """``scheme://host:port``: the proxy without credentials, all that a
        request carries (see :mod:`scrapy_sticky_proxy.auth`)."""
        return f"{self.scheme}://{self.hostport}"

    def authorization(self, session_id: str, encoding: str = "latin-1") -> bytes | None:
        """The ``Proxy-Authorization`` value for *session_id* (Basic, as
        HttpProxyMiddleware builds it from a URL), or None without
        credentials."""
        rest = self.render(session_id).partition("://")[2]
        userinfo = rest.rpartition("@")[0]
        if not userinfo:
            return None
        user, _, password = userinfo.partition(":")
        raw = f"{unquote(user)}:{unquote(password)}".encode(encoding)
        return b"Basic " + base64.b64encode(raw)

    def redact(self, text: str) -> str:
        """*text* with every form of the password replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return (
            f"ProxyTemplate({self.scheme}://{self.hostport}, "
            f"provider={self.provider!r}, session={self.has_session})"
        )

    __str__ = __repr__

    @classmethod
    def parse(
        cls,
        url: str,
        spec: ProviderSpec,
        lifetime: int | None = None,
        *,
        setting: str = "STICKY_PROXY_URL",
        require_session: bool = True,
    ) -> ProxyTemplate:
        """Validate *url* and place the session id (and lifetime) per *spec*.

        Errors are :class:`ConfigError` naming *setting* (or
        STICKY_PROXY_SESSION_LIFETIME) and never quoting the credentials.
        With ``require_session=False`` (static proxy lists) a URL without
        ``{session}`` is accepted as is and *lifetime* only fills ``{lifetime}``.
        """

        def fail(problem: str) -> ConfigError:
            return ConfigError(setting, problem)

        scheme, userinfo, hostport = split_proxy_url(url, spec.gateway, fail)
        _check_placeholders(userinfo, fail)
        user, colon, pw = userinfo.partition(":")
        cut = re.split(r"\{(?:session|lifetime)\}", pw)
        secret = cut[0] or max(cut, key=len)
        if spec.replace and secret == spec.default_password:
            secret = ""
        has_session = _SESSION in userinfo
        if _LIFETIME in userinfo:
            if lifetime is None:
                raise ConfigError(
                    LIFETIME_SETTING,
                    f"is not set, but {setting} contains {{lifetime}}; set it (in "
                    "seconds) or remove the placeholder",
                )
            text = _lifetime_text(spec, lifetime)
            user, pw = user.replace(_LIFETIME, text), pw.replace(_LIFETIME, text)
            lifetime = None  # used up
        if require_session and not has_session:
            user, colon, pw = _place(
                spec, (user, colon, pw), lifetime=lifetime, hostport=hostport, fail=fail
            )
        elif require_session and lifetime is not None:
            raise ConfigError(
                LIFETIME_SETTING,
                f"is set but {setting} is a {{session}} template without "
                "{lifetime}; add {lifetime} where your provider expects it, or unset "
                "the lifetime",
            )
        userinfo = f"{user}{colon}{pw}" if pw else user
        # No UnicodeEncodeError: isprintable() has rejected lone surrogates.
        pieces = [quote(p, safe=_USERINFO_SAFE) for p in userinfo.split(_SESSION)]
        escaped = quote(secret, safe=_USERINFO_SAFE)
        segments = [f"{scheme}://{pieces[0]}", *pieces[1:]]
        segments[-1] += f"@{hostport}" if userinfo else hostport
        password = unquote(secret) or None
        return cls(
            hostport=hostport,
            scheme=scheme,
            password=password,
            provider=spec.name,
            id_rules=spec.id_rules,
            segments=tuple(segments),
            secrets=tuple(dict.fromkeys(s for s in (escaped, password) if s)),
        )


def _check_placeholders(userinfo: str, fail: Fail) -> None:
    """Only {session} and {lifetime}; an unknown one is named if in the username."""
    user_end = userinfo.find(":") if ":" in userinfo else len(userinfo)
    for token in _TOKEN_RE.finditer(userinfo):
        name = token.group(1)
        if f"{{{name}}}" in PLACEHOLDERS:
            continue
        where = "in the password"
        if token.start() < user_end and _NAME_RE.fullmatch(name):
            where = f"{{{name}}}"
        raise fail(
            f"unknown placeholder {where}; the allowed placeholders are "
            f"{', '.join(PLACEHOLDERS)} (write literal braces as %7B and %7D)"
        )
    if set(_TOKEN_RE.sub("", userinfo)) & {"{", "}"}:
        raise fail("has a stray '{' or '}'; write literal braces as %7B and %7D")


def _place(
    spec: ProviderSpec, cred: tuple[str, str, str], *, lifetime: int | None,
    hostport: str, fail: Fail,
) -> tuple[str, str, str]:  # fmt: skip
    """Append (or write) the {session} marker where *spec* puts it."""
    user, colon, pw = cred
    if spec.part is None:
        others = ", ".join(sorted(set(PRESETS) - {spec.name}))
        raise fail(
            "has no {session} placeholder: add {session} where your provider expects "
            f"the session id (e.g. http://user-session-{{session}}:pass@{hostport}), "
            f"or pick a STICKY_PROXY_PROVIDER preset ({others})"
        )
    added = spec.session_format
    if lifetime is not None:
        if spec.lifetime_format is None:
            raise ConfigError(
                LIFETIME_SETTING,
                f"is set but the {spec.name} preset has no lifetime parameter; unset "
                "it, or use a {session}/{lifetime} template in the proxy URL",
            )
        text = _lifetime_text(spec, lifetime)
        added += spec.lifetime_format.replace(_LIFETIME, text)
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
