"""Proxy URL templates: one validated proxy URL, ready to take a session id.

:meth:`ProxyTemplate.parse` checks the URL once (:mod:`.proxyurl`), places
the session id per the provider preset (:mod:`.providers`) and splits the URL
around it, so that :meth:`ProxyTemplate.render` is a single string join per
request. The template also answers for the password: ``Proxy-Authorization``
values, redaction, a ``repr`` without credentials.

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..errors import ConfigError
from .ids import IdRules
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

PLACEHOLDERS = (SESSION, LIFETIME)
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

    def credentials(self, session_id: str) -> tuple[str, str] | None:
        """``(username, password)``, unquoted, for *session_id*; None
        without credentials."""
        rest = self.render(session_id).partition("://")[2]
        userinfo = rest.rpartition("@")[0]
        if not userinfo:
            return None
        user, _, password = userinfo.partition(":")
        return unquote(user), unquote(password)

    def authorization(self, session_id: str, encoding: str = "latin-1") -> bytes | None:
        """The ``Proxy-Authorization`` value for *session_id* (Basic, as
        HttpProxyMiddleware builds it from a URL), or None without
        credentials."""
        credentials = self.credentials(session_id)
        if credentials is None:
            return None
        raw = ":".join(credentials).encode(encoding)
        return b"Basic " + base64.b64encode(raw)

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
        if require_session and not has_session:
            user, colon, pw = place_session(
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
        pieces = [quote(p, safe=_USERINFO_SAFE) for p in userinfo.split(SESSION)]
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
