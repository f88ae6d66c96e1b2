"""Every way a proxy password can be written in a message, for redaction.

A message may show a value of the user's (a bad meta value, a pool name, a
request body in a give-up record) as it is, by its ``repr()`` or
``ascii()``, JSON-encoded, percent-encoded, or as bytes: each writes a
password with a backslash, a quote, a space or a non-ASCII character
differently. :func:`secret_forms` gives them all, longest first, so that a
form holding another is replaced whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MIN_PIECE = 4  # a shorter piece of a password beside a longer one is not one
MIN_KEY = 8  # a login "user:" is a name; "3f9a1c77e0:" is a key
PLACEHOLDER = re.compile(r"\{(?:session|lifetime|location)\}")


def login_secrets(userinfo: str, secret: str, safe: str) -> tuple[str, ...]:
    """The forms of each piece of a proxy URL's password between its
    placeholders (none if *secret*, its first piece or the longest, is
    empty: a provider's default) or, in a login of the form ``key:`` (no
    password), of the key (of MIN_KEY characters at least, without a
    placeholder): as written in the URL, quoted (but *safe*), unquoted."""
    user, colon, password = userinfo.partition(":")
    if password:
        hidden = pieces(PLACEHOLDER.split(password)) if secret else []
    else:  # a key, not a name: long, and no session in it
        key = colon and len(user) >= MIN_KEY and not PLACEHOLDER.search(user)
        hidden = [user] if key else []
    quoted = (quote(piece, safe=safe) for piece in hidden)
    return secret_forms(*quoted, *map(unquote, hidden))


def secret_forms(*secrets: str | None) -> tuple[str, ...]:
    forms: list[str] = []
    for secret in filter(None, secrets):
        forms += (secret, *_escaped(secret), *_encoded(secret))
    return longest_first(forms)


def shown(value: object, limit: int = 40, redact: Any = None) -> str:
    """A short repr of an untrusted value, for messages (a huge int has no
    repr beyond 4300 digits, a repr may raise), URL passwords hidden,
    *redact* run before the cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        return f"a number of {value.bit_length()} bits"
    try:
        text = url_passwords_hidden(repr(value))
    except Exception:  # a repr of the spider's own that fails
        text = f"a {type(value).__name__}"
    text = text if redact is None else redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def url_passwords_hidden(text: str) -> str:
    """*text* with the credentials of every ``[scheme://]user:password@``
    in it hidden: a value shown whole may be a proxy URL. The password runs
    to the last ``@`` before a space (it may hold ``@`` and quotes); a login
    with no password (``key:@``) may be a key, and goes whole."""
    return _LOGIN.sub(r"\1***:@", _USERINFO.sub(r"\1:***@", text))


_START = r"(?:^|(?<=[\s'\"\[(,{])|(?<=://))"  # where a login may begin
_USERINFO = re.compile(_START + r"([^\s:/'\"@]*):[^\s]*@(?=[^\s@]+)")
_LOGIN = re.compile(_START + r"()[^\s:/'\"@]+:@")


def redact(text: str, secrets: Iterable[str]) -> str:
    """*text* with each of *secrets* (longest first) replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def longest_first(forms: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(dict.fromkeys(filter(None, forms)), key=len, reverse=True))


def pieces(parts: list[str]) -> list[str]:
    """The literal pieces of a text cut by placeholders into *parts*: each
    of at least MIN_PIECE characters, or else the longest."""
    return [part for part in parts if len(part) >= MIN_PIECE] or [max(parts, key=len)]


def _escaped(secret: str) -> list[str]:
    """As repr() and ascii() write it inside either quote."""
    return [
        "".join(_in_repr(ch, quote, ascii_only) for ch in secret)
        for quote in ("'", '"')
        for ascii_only in (False, True)
    ]


def _in_repr(ch: str, quote: str, ascii_only: bool) -> str:
    if ch in ("\\", quote):
        return "\\" + ch
    if ch.isprintable() and (ch.isascii() or not ascii_only):
        return ch
    return ascii(ch)[1:-1]


def _encoded(secret: str) -> list[str]:
    """JSON-escaped, percent-encoded (either case of hex), as bytes."""
    forms = [json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms += (encoded, _lower_hex(encoded))
    raw = secret.encode("utf-8")
    forms += (raw.decode("latin-1"), repr(raw)[2:-1])  # bytes read as latin-1
    return forms


def _lower_hex(text: str) -> str:
    parts = text.split("%")
    return "%".join([parts[0], *(p[:2].lower() + p[2:] for p in parts[1:])])
