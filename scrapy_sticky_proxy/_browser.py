"""What a session's browser context is opened with, and what its errors
become: Playwright's ``proxy`` option decoded from the session's
Proxy-Authorization value, the request's own context options with that
proxy, and Chromium's network errors as the exceptions Scrapy's HTTP handler
raises (used by :mod:`scrapy_sticky_proxy.playwright`)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from twisted.internet.error import TimeoutError as TxTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable

# Context options that would undo the session: its proxy is ours; a
# persistent context writes a profile to disk and has no per-context proxy.
_OURS = ("proxy", "user_data_dir")

# Chromium's network errors, as the exceptions Scrapy's own handler raises
# for the same event, so that the ban policy, the outage handling and
# RetryMiddleware treat a browser request as any other.
_NET_ERRORS: dict[str, Callable[[str], Exception]] = {
    "net::ERR_PROXY_CONNECTION_FAILED": ConnectionRefusedError,
    "net::ERR_CONNECTION_RESET": ConnectionResetError,
    "net::ERR_CONNECTION_CLOSED": ConnectionResetError,
    "net::ERR_EMPTY_RESPONSE": ConnectionResetError,
    "net::ERR_TIMED_OUT": lambda message: TxTimeoutError(string=message),
}


def network_error(exc: PlaywrightError) -> Exception:
    """*exc* as the exception Scrapy's HTTP handler would have raised."""
    if isinstance(exc, PlaywrightTimeoutError):  # navigation timeout
        return TxTimeoutError(string=exc.message)
    for code, make in _NET_ERRORS.items():
        if code in exc.message:
            return make(exc.message)
    return exc


def proxy_option(
    meta: dict[str, Any], auth: bytes | None, encoding: str
) -> dict[str, str]:
    """Playwright's ``proxy`` option for the request's route: its endpoint
    and the credentials decoded from its Proxy-Authorization value."""
    proxy = {"server": str(meta.get("proxy"))}
    scheme, _, token = (auth or b"").partition(b" ")
    if scheme.lower() != b"basic":
        return proxy
    try:
        raw = base64.b64decode(token.strip(), validate=True).decode(encoding)
    except (binascii.Error, UnicodeDecodeError):
        return proxy
    user, sep, password = raw.partition(":")
    if sep:
        proxy.update(username=user, password=password)
    return proxy


def session_context_kwargs(given: object, proxy: dict[str, str]) -> dict[str, Any]:
    """The request's own ``playwright_context_kwargs`` (viewport, locale,
    ignore_https_errors ...) with the session's proxy."""
    kwargs = dict(given) if isinstance(given, dict) else {}
    for name in _OURS:
        kwargs.pop(name, None)
    kwargs["proxy"] = proxy
    return kwargs
