"""A session's cookies in Redis (``STICKY_PROXY_SHARE_COOKIES``): how they
are written, and what is accepted back.

One string per session jar, ``ns:cookies:<digest of the jar id>``, expiring
after the store's TTL: JSON, a list of ``[name, value, domain, path, secure,
expires, http_only]``, never pickle. Anyone who can write to the namespace
can put anything there, so a value read back is taken whole or not at all:
at most :data:`MAX_JSON` characters and :data:`MAX_COOKIES` cookies, each
field of its type and length, no control character, no ``;`` (nothing that
could end a ``Cookie`` header or start another one). Cookies holding a proxy
password are never written.

No Scrapy: :class:`http.cookiejar.Cookie` objects in and out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from http.cookiejar import Cookie

from .redis_layout import key_digest

MAX_COOKIES = 64  # per jar (browsers keep about 50 per site)
MAX_JSON = 65536  # characters of one jar's value
MAX_VALUE = 4096  # characters of a cookie value (the usual browser limit)
MAX_NAME = 256
MAX_DOMAIN = 253
MAX_PATH = 1024
MAX_EXPIRES = 2**33  # Unix time, past year 2200

# Printable ASCII without ';' (or ',' in names, '=' in names): what a
# Cookie header can carry without ending a pair or the header.
_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]*")
_NAME = re.compile(r"[!#-+\--:<>-~]+")
_DOMAIN = re.compile(r"\.?[A-Za-z0-9_.:\-\[\]]+")
_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")


def redis_key(namespace: str, jar: str) -> str:
    """Where the jar *jar* (its ``meta["cookiejar"]`` id) is kept."""
    return f"{namespace}:cookies:{key_digest(jar)}"


def encode(cookies: Iterable[Cookie], secrets: Iterable[str] = ()) -> str | None:
    """The JSON of *cookies* to store, or None if there is nothing to store.
    Cookies that would be refused when read back, and any holding one of
    *secrets*, are left out; only the first :data:`MAX_COOKIES` are kept."""
    rows = []
    for cookie in cookies:
        row = [
            cookie.name,
            cookie.value,
            cookie.domain,
            cookie.path,
            bool(cookie.secure),
            None if cookie.expires is None else int(cookie.expires),
            cookie.has_nonstandard_attr("HttpOnly"),
        ]
        if _check(row) is None:
            continue
        text = f"{cookie.name}={cookie.value};{cookie.domain}{cookie.path}"
        if any(secret in text for secret in secrets):
            continue
        rows.append(row)
        if len(rows) == MAX_COOKIES:
            break
    if not rows:
        return None
    value = json.dumps(rows, ensure_ascii=True, separators=(",", ":"))
    return value if len(value) <= MAX_JSON else None


def decode(raw: object) -> list[Cookie] | None:
    """The cookies of a stored value, or None if it is not one of ours."""
    if not isinstance(raw, str) or len(raw) > MAX_JSON:
        return None
    try:
        rows = json.loads(raw, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rows, list) or len(rows) > MAX_COOKIES:
        return None
    cookies = []
    for row in rows:
        cookie = _check(row)
        if cookie is None:
            return None
        cookies.append(cookie)
    return cookies


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _check(row: object) -> Cookie | None:
    """A Cookie from a stored row, or None if any field is wrong."""
    if not isinstance(row, list) or len(row) != 7:
        return None
    name, value, domain, path, secure, expires, http_only = row
    if not (
        _text(name, _NAME, MAX_NAME)
        and _text(value, _VALUE, MAX_VALUE, empty=True)
        and _text(domain, _DOMAIN, MAX_DOMAIN)
        and _text(path, _PATH, MAX_PATH)
        and isinstance(secure, bool)
        and isinstance(http_only, bool)
    ):
        return None
    if expires is not None and (
        type(expires) is not int or not 0 <= expires <= MAX_EXPIRES
    ):
        return None
    return Cookie(
        version=0,
        name=name,
        value=value,
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=domain.startswith("."),
        domain_initial_dot=domain.startswith("."),
        path=path,
        path_specified=True,
        secure=secure,
        expires=expires,
        discard=expires is None,
        comment=None,
        comment_url=None,
        rest={"HttpOnly": ""} if http_only else {},
    )


def _text(
    value: object, pattern: re.Pattern[str], limit: int, empty: bool = False
) -> bool:
    if not isinstance(value, str) or len(value) > limit:
        return False
    return (empty or bool(value)) and pattern.fullmatch(value) is not None
