"""``Proxy-Authorization: Basic`` values, built per request from pieces
prepared once per proxy URL and country.

A header is asked for on every request (:mod:`scrapy_sticky_proxy.auth`).
Rendering the proxy URL with the session id and parsing the credentials
back out of it (``ProxyTemplate.credentials``, the long way) cost more than
the rest of the credential check; the credentials unquoted once, around the
place of the session id, make a request's header one join and one base64
(python -m bench --only per-request; tests/test_hot_path.py checks both
ways agree).

Pure logic: no Scrapy import, no I/O.
"""

from __future__ import annotations

import binascii
import re
from urllib.parse import unquote

#: Where the session id goes: never in a URL (``isprintable()`` rejects it).
_MARK = "\x00"
#: A percent-escape cut short by the session id: ``unquote`` would read the
#: id's first characters as its digits, so the pieces cannot be unquoted
#: apart.
_CUT_ESCAPE = re.compile(r"%[0-9A-Fa-f]?$")
#: Pieces that say: take the long way.
LONG_WAY: tuple[str, ...] = tuple([""])


def credential_pieces(segments: tuple[str, ...]) -> tuple[str, ...] | None:
    """``"user:password"``, unquoted, cut where the session id goes in the
    proxy URL ``session_id.join(segments)``; None without credentials;
    :data:`LONG_WAY` where unquoting the pieces apart would not give the
    same text.

    The same text for any session id that holds no ``%`` (nothing to
    unquote) and no ``:`` (where the user name ends).
    """
    userinfo = _MARK.join(segments).partition("://")[2].rpartition("@")[0]
    if not userinfo:
        return None
    if any(_CUT_ESCAPE.search(p) for p in userinfo.split(_MARK)[:-1]):
        return LONG_WAY
    user, _, password = userinfo.partition(":")
    return tuple(f"{unquote(user)}:{unquote(password)}".split(_MARK))


def basic(credentials: str, encoding: str) -> bytes:
    """The header value for ``user:password`` (base64.b64encode's bytes)."""
    return b"Basic " + binascii.b2a_base64(credentials.encode(encoding), newline=False)
