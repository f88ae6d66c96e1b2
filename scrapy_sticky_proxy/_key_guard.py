"""A ``STICKY_PROXY_KEY`` function of the user's, checked at every request.

At start it is called once, on a sample request (``config/callables.py``);
one that raises there is accepted, since it may read what only the
spider's requests carry (``request.meta["video_id"]``). At run time such a
function may still raise, or return ``None`` or an int for some requests:
that request cannot be given a session. Before this guard the error left
the middleware as the request's download error, before the request was in
the ledger: it reached neither the spider nor a record, and the crawl
"finished". Now the guard raises :class:`KeyFailed` (an IgnoreRequest),
which :class:`~.ledger.StickyProxyLedger` records as ``failed``, with the
reason ``key/<exception type>`` or ``key/<type returned>``
(``key/KeyError``, ``key/NoneType``); the first of each reason is logged
as an error naming the setting, the function and the URL (passwords
redacted).

The built-in keys (``url``, ``host``, ``domain``) are not wrapped: they
return a str for any request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from scrapy.exceptions import IgnoreRequest

from ._meta import KEY
from ._policy_guard import reason_text
from .routing.keys import KEY_POLICIES

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request

    from .routing.keys import KeyFunc

logger = logging.getLogger("scrapy_sticky_proxy.middleware")

MAX_LOGGED = 32  # distinct reasons logged; the records keep counting


class KeyFailed(IgnoreRequest):
    """The key function gave no key for a request; *reason* goes in its
    record."""

    def __init__(self, reason: str, source: str = "STICKY_PROXY_KEY"):
        super().__init__(f"{reason}: {source} gave no key")
        self.reason = reason


def checked(func: KeyFunc | None, redact: Callable[[str], str]) -> KeyFunc | None:
    """*func* itself if it is one of ours (or None), else it guarded."""
    if func is None or func in KEY_POLICIES.values():
        return func
    return CheckedKey(func, redact)


def meta_key(redact: Callable[[str], str]) -> CheckedKey:
    """The ``str()`` of a ``meta["sticky_proxy_key"]`` that is no str,
    guarded the same way: ``str(10**5000)`` raises, and so may a class's
    ``__str__``."""
    return CheckedKey(_str_of_meta_key, redact, 'meta["sticky_proxy_key"]', "str()")


def _str_of_meta_key(request: Request) -> str:
    return str(request.meta[KEY])


class CheckedKey:
    """Calls the user's key function; raises :class:`KeyFailed` when it
    raises or answers anything but a str."""

    __slots__ = ("_func", "_logged", "_name", "_redact", "_source")

    def __init__(
        self,
        func: KeyFunc,
        redact: Callable[[str], str],
        source: str = "STICKY_PROXY_KEY",
        name: str | None = None,
    ):
        self._func = func
        self._redact = redact
        self._source = source
        self._logged: set[str] = set()
        self._name = name or getattr(func, "__qualname__", None) or type(func).__name__

    def __call__(self, request: Request) -> str:
        try:
            key = self._func(request)
        except Exception as exc:
            self._fail(request, type(exc).__name__, f"raised {_describe(exc)}")
        if not isinstance(key, str):
            kind = type(key).__name__
            self._fail(request, kind, f"returned {kind}, not a str")
        return key

    def _fail(self, request: Request, kind: str, what: str) -> NoReturn:
        reason = reason_text(f"key/{kind}")
        if reason not in self._logged and len(self._logged) < MAX_LOGGED:
            self._logged.add(reason)
            logger.error(
                "%s: %s %s for %s; the request is not sent and "
                "is recorded as failed (%s), as are the next ones this happens "
                "to (not logged again)",
                self._source,
                self._name,
                self._redact(what),
                self._redact(request.url),
                reason,
            )
        raise KeyFailed(reason, self._source)


def _describe(exc: Exception) -> str:
    """``Type: message``, cut short (the message is the user's code's)."""
    try:
        message = str(exc)
    except Exception:  # a __str__ that fails
        message = ""
    message = " ".join(message.split())[:200]
    name = type(exc).__name__
    return f"{name}: {message}" if message else name
