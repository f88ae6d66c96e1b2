"""Ban rules: which client addresses the demo site bans, and how.

A :data:`BanRule` gets ``(client_ip, path)`` and returns ``None`` (serve)
or a kind: one of :data:`BAN_KINDS` ("403", "429", or "captcha": a 200
captcha page), or a fault: "redirect" answers 302 to /captcha?from=PATH
("redirect-one": to /captcha, the same URL for every page; "refresh": a
200 page whose ``<meta http-equiv="refresh">`` leads there),
"reset" drops the connection unanswered, "hang" never answers (the client's
timeout ends it), "503" answers 503 Service Unavailable. "429" carries
``Retry-After: 1`` (:data:`RETRY_AFTER`). :class:`RememberBans` wraps a rule
so that an exit banned once stays banned.

A rule with a true ``cookies`` attribute is called with the request's
Cookie header too, ``(client_ip, path, cookie_header)``:
:func:`warmup_required` bans every request but ``/warmup`` that lacks the
cookie ``/warmup`` set for the same address (:data:`WARM_COOKIE`).

Cookies bound to the client address (``DemoSite.ip_cookies``): every answer
sets :data:`IP_COOKIE` to the address that asked, and a request presenting
one issued to another address is banned (403), as sites that tie a session
cookie to the IP that received it do (:func:`foreign_ip_cookie`).
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlencode

BanRule = Callable[[str, str], "str | None"]
BAN_KINDS = ("403", "429", "captcha")  # the kinds ban_fraction draws from
RETRY_AFTER = 1.0  # what the site's 429 answers say, in seconds


def ban_answer(kind: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The site's answer to a request for *path* banned with *kind* (but
    "captcha": the captcha page is the site's own, also at /captcha)."""
    text = ("Content-Type", "text/plain; charset=utf-8")
    captcha = "/captcha?" + urlencode({"from": path})
    if kind in ("redirect", "redirect-one"):
        # Per page, as most sites do; "redirect-one": every page to one
        # URL, whose second redirect Scrapy's dupefilter drops.
        location = "/captcha" if kind == "redirect-one" else captcha
        return 302, [("Location", location), text], b"moved\n"
    if kind == "refresh":  # a 200 whose meta refresh leads to the captcha
        refresh = f'<meta http-equiv="refresh" content="0;url={html.escape(captcha)}">'
        page = f"<!DOCTYPE html>\n<html><head>{refresh}</head><body></body></html>\n"
        return 200, [("Content-Type", "text/html; charset=utf-8")], page.encode()
    if kind in ("429", "503"):
        body = b"too many requests\n" if kind == "429" else b"unavailable\n"
        return int(kind), [("Retry-After", "1"), text], body
    if kind == "407":  # the site itself, not the gateway, asks for them
        asks = ("Proxy-Authenticate", 'Basic realm="site"')
        return 407, [asks, text], b"proxy credentials, says the site\n"
    return 403, [text], b"forbidden\n"


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_kind(kind: str) -> str:
    if kind not in BAN_KINDS:
        raise ValueError(f"ban kind must be one of {BAN_KINDS}, not {kind!r}")
    return kind


def ban_fraction(
    fraction: float, kinds: Iterable[str] = BAN_KINDS, salt: str = ""
) -> BanRule:
    """Ban about ``fraction`` of client addresses, chosen by a hash of the
    address (same answer every time), each with a hash-chosen kind."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction!r}")
    kinds = tuple(_check_kind(k) for k in kinds)
    if not kinds:
        raise ValueError("kinds must not be empty")

    def rule(client_ip: str, path: str) -> str | None:
        if _unit_hash("ban", salt, client_ip) >= fraction:
            return None
        return kinds[int(_unit_hash("kind", salt, client_ip) * len(kinds))]

    return rule


def ban_all(kind: str = "403") -> BanRule:
    """Ban every client address."""
    _check_kind(kind)

    def rule(client_ip: str, path: str) -> str | None:
        return kind

    return rule


def ban_ips(ips: Iterable[str], kind: str = "403") -> BanRule:
    """Ban exactly these client addresses."""
    _check_kind(kind)
    banned = frozenset(ips)

    def rule(client_ip: str, path: str) -> str | None:
        return kind if client_ip in banned else None

    return rule


def rate_limit(
    window: float = 60.0, clock: Callable[[], float] = time.monotonic
) -> BanRule:
    """A rate limiter: an address's first request in each *window* seconds
    gets a 429 with ``Retry-After: 1``, and so does every request of it
    before that second is up (coming back too early earns another); then
    its requests are served until the window ends."""
    if not window > RETRY_AFTER:
        raise ValueError(f"window must be longer than {RETRY_AFTER} s")
    opened: dict[str, float] = {}  # address -> start of its window

    def rule(client_ip: str, path: str) -> str | None:
        now = clock()
        start = opened.get(client_ip)
        if start is None or now - start >= window:
            opened[client_ip] = start = now
        return "429" if now - start < RETRY_AFTER else None

    return rule


class RememberBans:
    """Bans an exit on every request once *rule* has banned it, as a site
    remembers a banned address: a crawl that goes back to a burned session
    is banned again. ``banned`` holds the exits banned so far, with their
    kind. Called from the demo site's one loop thread."""

    def __init__(self, rule: BanRule) -> None:
        self.rule = rule
        self.banned: dict[str, str] = {}

    def __call__(self, client_ip: str, path: str) -> str | None:
        kind = self.banned.get(client_ip)
        if kind is None:
            kind = self.rule(client_ip, path)
            if kind in BAN_KINDS:
                self.banned[client_ip] = kind
        return kind


IP_COOKIE = "exit"  # the demo site's IP-bound cookie


def foreign_ip_cookie(client_ip: str, cookie_header: str) -> bool:
    """Whether a Cookie header presents an :data:`IP_COOKIE` issued to
    another address than *client_ip*."""
    for pair in cookie_header.split(";"):
        name, _, value = pair.strip().partition("=")
        if name == IP_COOKIE and value != client_ip:
            return True
    return False


WARM_COOKIE = "warm"  # what /warmup sets: the address that fetched it
WARMUP_PATH = "/warmup"


class _WarmupRequired:
    cookies = True  # called with the Cookie header too

    def __init__(self, kind: str) -> None:
        self.kind = _check_kind(kind)

    def __call__(
        self, client_ip: str, path: str, cookie_header: str = ""
    ) -> str | None:
        if path.partition("?")[0] == WARMUP_PATH:
            return None
        return None if cookie_of(cookie_header, WARM_COOKIE) == client_ip else self.kind


def warmup_required(kind: str = "403") -> BanRule:
    """Ban every request but /warmup that does not present the
    :data:`WARM_COOKIE` that /warmup set for the same client address."""
    return _WarmupRequired(kind)


def cookie_of(cookie_header: str, name: str) -> str | None:
    """The value of cookie *name* in a Cookie header, if it holds one."""
    for pair in cookie_header.split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None
