"""Proxy URL templates: one validated proxy URL, ready to take a session id.

:meth:`ProxyTemplate.parse` checks the URL once (:mod:`.proxyurl`), places
the session id (and where a country goes) per the provider preset
(:mod:`.providers`, :mod:`.location`) and splits the URL around it, so that
:meth:`ProxyTemplate.render` is a single string join per request (the split
for each country is made once). The template also answers for the
password: ``Proxy-Authorization`` values, redaction, a ``repr`` without
credentials.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from ..errors import ConfigError
from .basic_auth import LONG_WAY, basic, credential_pieces
from .ids import IdRules
from .location import (
    LOCATION,
    UNSUPPORTED,
    LocationError,
    Place,
    country_code,
    location_text,
)
from .providers import (
    LIFETIME,
    LIFETIME_SETTING,
    PRESETS,
    SESSION,
    ProviderSpec,
    lifetime_text,
    place_session,
)
from .proxyurl import Fail, split_proxy_url
from .secrets import PLACEHOLDER, login_secrets, redact

PLACEHOLDERS = (SESSION, LIFETIME, LOCATION)
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
    is none; :attr:`secrets` and :meth:`redact` also cover its escaped forms.
    ``repr()`` and ``str()`` never show credentials. *places* are where
    its URL writes a location (empty: it cannot, and *no_location* says why).
    """

    hostport: str
    scheme: str = "http"
    password: str | None = None
    provider: str = "generic"
    id_rules: IdRules = PRESETS["generic"].id_rules
    segments: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    places: tuple[Place, ...] = ()
    no_location: str = ""
    userinfo: str = ""  # unquoted, with the {session} and {location} markers
    _by_country: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    # Per country (None: none): credential_pieces() of its segments.
    _auth: dict[str | None, tuple[str, ...] | None] = field(
        default_factory=dict, compare=False
    )
    #: ``scheme://host:port``: the proxy without credentials, all that a
    #: request carries (see :mod:`scrapy_sticky_proxy.auth`).
    endpoint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.segments:
            object.__setattr__(self, "segments", (f"{self.scheme}://{self.hostport}",))
        object.__setattr__(self, "endpoint", f"{self.scheme}://{self.hostport}")

    @property
    def has_session(self) -> bool:
        """Whether the rendered URL depends on the session id."""
        return len(self.segments) > 1

    def render(self, session_id: str, country: str | None = None) -> str:
        """The full proxy URL, credentials included, for *session_id* (in
        *country*, when given).

        *session_id* must fit :attr:`id_rules` (use ``ids.session_id``).
        """
        segments = self.segments if country is None else self.located(country)
        return session_id.join(segments)

    def located(self, country: str) -> tuple[str, ...]:
        """The URL's segments in *country*, an upper-case ISO code (from
        ``location.country_code``); :class:`LocationError` if the URL cannot
        say it."""
        segments = self._by_country.get(country)
        if segments is not None:
            return segments
        if not self.places:
            raise LocationError(UNSUPPORTED, self.no_location)
        location = {"country": country_code(country)}
        text = location_text(self.places, location, self.provider)
        userinfo = self.userinfo.replace(LOCATION, text)
        segments = _split(self.scheme, userinfo, self.hostport)
        if location["country"] == country:  # the cache holds valid codes only
            self._by_country[country] = segments
        return segments

    def credentials(
        self, session_id: str, country: str | None = None
    ) -> tuple[str, str] | None:
        """``(username, password)``, unquoted, for *session_id* (in
        *country*); None without credentials."""
        rest = self.render(session_id, country).partition("://")[2]
        userinfo = rest.rpartition("@")[0]
        if not userinfo:
            return None
        user, _, password = userinfo.partition(":")
        return unquote(user), unquote(password)

    def authorization(
        self, session_id: str, encoding: str = "latin-1", country: str | None = None
    ) -> bytes | None:
        """The ``Proxy-Authorization`` value for *session_id* (in *country*;
        Basic, as HttpProxyMiddleware builds it from a URL), or None without
        credentials. Asked for on every request: see :mod:`.basic_auth`."""
        pieces = self._auth.get(country, LONG_WAY)
        if pieces is LONG_WAY:
            segments = self.segments if country is None else self.located(country)
            pieces = credential_pieces(segments)
            if country is None or country in self._by_country:  # valid codes only
                self._auth[country] = pieces
        if pieces is None:
            return None
        if pieces is LONG_WAY or "%" in session_id or ":" in session_id:
            credentials = self.credentials(session_id, country)
            assert credentials is not None
            return basic(":".join(credentials), encoding)
        return basic(session_id.join(pieces), encoding)

    def unencodable(self, encoding: str) -> str | None:
        """``"username"`` or ``"password"`` if that part of the credentials
        cannot be written in *encoding* (every Proxy-Authorization would
        fail), else None. Session ids are ASCII: any one stands for all."""
        credentials = self.credentials("0") or ()
        for part, text in zip(("username", "password"), credentials, strict=False):
            try:
                text.encode(encoding)
            except UnicodeEncodeError:
                return part
        return None

    def redact(self, text: str) -> str:
        """*text* with every form of the password replaced by ``***``."""
        return redact(text, self.secrets)

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
        cut = PLACEHOLDER.split(pw)
        secret = cut[0] or max(cut, key=len)
        if spec.replace and secret == spec.default_password:
            secret = ""
        secrets = login_secrets(userinfo, secret, _USERINFO_SAFE)
        has_session = SESSION in userinfo
        if LIFETIME in userinfo:
            if lifetime is None:
                raise ConfigError(
                    LIFETIME_SETTING,
                    f"is not set, but {setting} contains {{lifetime}}; set it (in "
                    "seconds) or remove the placeholder",
                )
            text = lifetime_text(spec, lifetime)
            user, pw = user.replace(LIFETIME, text), pw.replace(LIFETIME, text)
            lifetime = None  # used up
        located, no_location = _where_location(spec, userinfo, setting, fail)
        if require_session and not has_session:
            user, colon, pw = place_session(
                spec, (user, colon, pw), lifetime=lifetime, hostport=hostport,
                fail=fail, located=located,
            )  # fmt: skip
        elif require_session and lifetime is not None:
            raise ConfigError(
                LIFETIME_SETTING,
                f"is set but {setting} is a {{session}} template without "
                "{lifetime}; add {lifetime} where your provider expects it, or unset "
                "the lifetime",
            )
        userinfo = f"{user}{colon}{pw}" if pw else user
        segments = _split(scheme, userinfo.replace(LOCATION, ""), hostport)
        password = unquote(secret) or None
        return cls(
            hostport=hostport,
            scheme=scheme,
            password=password,
            provider=spec.name,
            id_rules=spec.id_rules,
            segments=segments,
            secrets=secrets,
            places=spec.places if located else (),
            no_location=no_location,
            userinfo=userinfo if located else "",
        )


def _split(scheme: str, userinfo: str, hostport: str) -> tuple[str, ...]:
    """The proxy URL cut where the session id goes."""
    # No UnicodeEncodeError: isprintable() has rejected lone surrogates.
    pieces = [quote(p, safe=_USERINFO_SAFE) for p in userinfo.split(SESSION)]
    segments = [f"{scheme}://{pieces[0]}", *pieces[1:]]
    segments[-1] += f"@{hostport}" if userinfo else hostport
    return tuple(segments)


def _where_location(
    spec: ProviderSpec, userinfo: str, setting: str, fail: Fail
) -> tuple[bool, str]:
    """Whether the URL will hold a {location} marker, and if not, why it
    cannot choose a country."""
    if LOCATION in userinfo:
        if not spec.places:
            raise fail(
                f"has {LOCATION}, but the {spec.name} preset writes no location: "
                "set STICKY_PROXY_PROVIDER to your provider's preset"
            )
        return True, ""
    if setting == "STICKY_PROXY_LIST":
        return False, "STICKY_PROXY_LIST (static proxies) cannot choose a country"
    if not spec.places:
        return False, f"the {spec.name} preset cannot choose a country"
    if SESSION in userinfo:
        return False, (
            f"{setting} is a {SESSION} template without {LOCATION}: add "
            f"{LOCATION} where {spec.name} reads the country"
        )
    part = userinfo.partition(":")[0 if spec.part == "username" else 2].lower()
    for place in spec.places:
        if place.marker.lower() in part:
            return False, (
                f"{setting} already sets the {place.param} ({place.marker}...): "
                f"remove it from the {spec.part} to choose the {place.param} "
                "per request"
            )
    return True, ""


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
