"""The ban settings and their defaults: STICKY_PROXY_BAN_STATUSES,
STICKY_PROXY_BAN_PATTERNS and STICKY_PROXY_BAN_EXCEPTIONS, parsed into the
values :class:`~scrapy_sticky_proxy.bans.BanPolicy` applies (``bans``
imports these, never the reverse)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .callables import load_class
from .readers import read_list, shown, whole_number

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

DEFAULT_BAN_STATUSES = (401, 403, 429)

# Errors that mean "the exit (or the path through it) failed", not "the
# gateway is unreachable". Refused connections and DNS failures concern the
# gateway itself, and CONNECT refusals the target: burning the session would
# not help, so they are left to Scrapy's RetryMiddleware.
DEFAULT_BAN_EXCEPTIONS = (
    "scrapy.exceptions.DownloadFailedError",
    "scrapy.exceptions.DownloadTimeoutError",
    "scrapy.exceptions.ResponseDataLossError",
    "twisted.web.client.ResponseNeverReceived",
    "twisted.web.client.ResponseFailed",
    "twisted.internet.error.ConnectionLost",
    "twisted.internet.error.TimeoutError",
    "builtins.ConnectionResetError",
)


def compile_patterns(
    values: Iterable[Any], setting: str
) -> tuple[re.Pattern[bytes], ...]:
    """Compile body regexes (str or bytes) as bytes patterns, naming *setting*
    in the error of one that does not compile."""
    compiled = []
    for value in values:
        try:
            raw = value.encode() if isinstance(value, str) else value
        except UnicodeEncodeError:  # a lone surrogate
            raise ConfigError(setting, f"{shown(value)} is not text") from None
        if not isinstance(raw, bytes):
            raise ConfigError(setting, f"expected regex strings, got {value!r}")
        try:
            compiled.append(re.compile(raw))
        except re.error as exc:
            raise ConfigError(
                setting, f"regex {value!r} does not compile: {exc}"
            ) from None
    return tuple(compiled)


def ban_statuses(settings: BaseSettings) -> frozenset[int]:
    name = "STICKY_PROXY_BAN_STATUSES"
    if settings.get(name) is None:
        return frozenset(DEFAULT_BAN_STATUSES)
    statuses = set()
    for value in read_list(settings, name):
        # Short text only ("0403" too): int() refuses 5,000 digits.
        text = isinstance(value, str) and value.strip().isdecimal()
        number = int(value) if text and len(value.strip()) <= 10 else value
        status = whole_number(number, 100, 599)
        if status is None:
            raise ConfigError(name, f"{shown(value)} is not an HTTP status (100-599)")
        if status == 407:
            raise ConfigError(
                name,
                "407 is the gateway refusing the credentials (which stops the "
                "crawl) or the site's own answer: it cannot be a ban status",
            )
        statuses.add(status)
    return frozenset(statuses)


def ban_patterns(settings: BaseSettings) -> tuple[re.Pattern[bytes], ...]:
    name = "STICKY_PROXY_BAN_PATTERNS"
    return compile_patterns(read_list(settings, name), name)


def ban_exceptions(settings: BaseSettings) -> tuple[type[BaseException], ...]:
    name = "STICKY_PROXY_BAN_EXCEPTIONS"
    if settings.get(name) is None:
        found = []
        for path in DEFAULT_BAN_EXCEPTIONS:
            # Some of these names only exist in newer Scrapy versions.
            try:
                found.append(load_class(path, name))
            except ConfigError:
                continue
        return tuple(found)
    classes = []
    for path in read_list(settings, name):
        cls = path if isinstance(path, type) else load_class(path, name)
        if not issubclass(cls, BaseException):
            raise ConfigError(name, f"{path!r} is not an exception class")
        classes.append(cls)
    return tuple(classes)
