"""Gateway credentials: Basic auth and provider-style session parameters."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import string

from ..routing.location import COUNTRY_CODES, PACKETSTREAM_NAMES
from ..routing.providers import PRESETS

_ALNUM = "A-Za-z0-9"
# NetNut's -res-us: only a code (or "any"), so that a Bright Data zone
# named "res" (-zone-res-country-us) stays part of the username.
_ANY_PARAM = (
    r"[-_](session|sessid|sessionid|sid|sesstime|sessionduration|sessionlength"
    r"|lifetime|country|cc|res(?=-(?:[A-Za-z]{2}|any)(?:[-_]|$)))"
    rf"-([{_ALNUM}]+)(?=[-_]|$)"
)


def _session_branches() -> list[str]:
    """A pattern per session parameter a preset writes (``-session-``,
    ``_session-``...) whose ids may hold more than letters and digits
    (Geonode's ``_``): its value takes every character of the alphabets of
    the presets that write it. Tried before :data:`_ANY_PARAM`, so that
    ``-session-M_XTv25KKZDx`` is read whole."""
    alphabets: dict[tuple[str, str], set[str]] = {}
    for spec in PRESETS.values():
        written = re.fullmatch(r"([-_])([a-z]+)-\{session\}", spec.session_format)
        if written is not None:
            alphabet = alphabets.setdefault((written[1], written[2]), set())
            alphabet.update(spec.id_rules.alphabet)
    branches = []
    for (sep, name), chars in sorted(alphabets.items()):
        extra = "".join(sorted(chars - set(string.ascii_letters + string.digits)))
        if extra:
            value = _ALNUM + re.escape(extra)
            branches.append(f"{re.escape(sep)}({name})-([{value}]+)(?=[-_]|$)")
    return branches


_PARAM_RE = re.compile("|".join([*_session_branches(), _ANY_PARAM]))
_SESSION_PARAMS = frozenset({"session", "sessid", "sessionid", "sid"})
_COUNTRY_PARAMS = frozenset({"country", "cc", "res"})
_CODE_OF_NAME = {name.lower(): code for code, name in PACKETSTREAM_NAMES.items()}


def _params(value: str) -> tuple[str, dict[str, str]]:
    """(base, the first value of each provider parameter), parameters
    stripped from the base."""
    found: dict[str, str] = {}

    def drop(match: re.Match[str]) -> str:
        groups = match.groups()  # (name, value) of the branch that matched
        name, text = next(
            (groups[i], groups[i + 1])
            for i in range(0, len(groups), 2)
            if groups[i] is not None
        )
        found.setdefault(name, text)
        return ""

    return _PARAM_RE.sub(drop, value), found


def split_credential(value: str) -> tuple[str, str | None]:
    """Strip provider parameter segments; return (base, session id or None)."""
    base, found = _params(value)
    sessions = [v for k, v in found.items() if k in _SESSION_PARAMS]
    return base, (sessions[0] if sessions else None)


def credential_country(user: str, password: str) -> str:
    """The country the credentials ask for, in any preset's format, as an
    ISO code ("" for none or ``any``; an unknown value as written)."""
    for value in (user, password):
        found = _params(value)[1]
        for param in _COUNTRY_PARAMS & found.keys():
            raw = found[param]
            if raw.lower() == "any":
                return ""
            code = raw.upper()
            return (
                code if code in COUNTRY_CODES else _CODE_OF_NAME.get(raw.lower(), raw)
            )
    return ""


def match_credentials(
    user: str, password: str, *, username: str, expected_password: str
) -> str | None:
    """The session id ("" if none) if the credentials are valid, else None."""
    base_user, user_session = split_credential(user)
    base_pw, pw_session = split_credential(password)
    ok_user = hmac.compare_digest(base_user.encode(), username.encode())
    ok_pw = hmac.compare_digest(base_pw.encode(), expected_password.encode())
    if not (ok_user and ok_pw):
        return None
    return user_session if user_session is not None else (pw_session or "")


def decode_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a ``Basic`` Proxy-Authorization value."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None
