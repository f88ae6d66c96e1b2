"""Gateway credentials: Basic auth and provider-style session parameters."""

from __future__ import annotations

import base64
import binascii
import hmac
import re

_PARAM_RE = re.compile(
    r"[-_](session|sessid|sessionid|sid|sesstime|sessionduration|sessionlength"
    r"|lifetime|country|cc)-([A-Za-z0-9]+)(?=[-_]|$)"
)
_SESSION_PARAMS = frozenset({"session", "sessid", "sessionid", "sid"})


def split_credential(value: str) -> tuple[str, str | None]:
    """Strip provider parameter segments; return (base, session id or None)."""
    found: list[str] = []

    def drop(match: re.Match[str]) -> str:
        if match.group(1) in _SESSION_PARAMS:
            found.append(match.group(2))
        return ""

    base = _PARAM_RE.sub(drop, value)
    return base, (found[0] if found else None)


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
