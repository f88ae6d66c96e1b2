"""Deciding whether a response or a download error means "this exit is banned".

A ban verdict is a short reason string, used in stats and give-up records:
``status/403``, ``pattern/0`` (the index of the matching body pattern), or
``exception/ResponseNeverReceived``. ``None`` means "not a ban".

A ban says "this exit is banned"; a dead or slow target is no ban (burning
sessions would not revive it) and is left to Scrapy's RetryMiddleware:

* a CONNECT the gateway refuses (``TunnelError``: 502/503/504 when the
  target cannot be reached or resolved, 403 for a host it will not serve)
  is the gateway's answer about the target, never about the exit (a 407
  stops the crawl: the credentials are wrong);
* a timeout counts against the exit only if the target answered some other
  request while this one was waiting on this session (:class:`AnswerLog`);
  when it answered nobody, the target is slow or down.

To take full control, point ``STICKY_PROXY_BAN_POLICY`` at a subclass of
:class:`BanPolicy` and override :meth:`BanPolicy.response_ban` and/or
:meth:`BanPolicy.exception_ban`; call ``super()`` to keep the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from scrapy import exceptions
from twisted.internet.error import ConnectError as TxConnectError
from twisted.internet.error import DNSLookupError, TCPTimedOutError
from twisted.internet.error import TimeoutError as TxTimeoutError

from .config import for_crawler
from .config.ban_rules import DEFAULT_BAN_STATUSES

if TYPE_CHECKING:
    import re

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

    from .config import StickyProxyConfig


class BanPolicy:
    """The default ban policy: statuses, body patterns and exception types.

    A response is a ban when its status is one of *statuses*
    (``STICKY_PROXY_BAN_STATUSES``), or when it is a 2xx whose body matches
    one of *patterns* (``STICKY_PROXY_BAN_PATTERNS``, compiled as bytes); a
    download error is a ban when it is an instance of one of *exceptions*
    (``STICKY_PROXY_BAN_EXCEPTIONS``). A verdict is a short reason, used in
    the ``sticky_proxy/bans/<reason>`` stats and give-up records; ``None``
    means "not a ban".

    For full control, subclass it and name the subclass in
    ``STICKY_PROXY_BAN_POLICY`` (its reasons are cleaned before use:
    passwords redacted, one line, at most 64 characters and 32 different
    reasons); it is built with Scrapy's
    ``build_from_crawler`` (so through :meth:`from_crawler`). Override
    :meth:`response_ban` and/or :meth:`exception_ban`, and call ``super()``
    to keep the defaults::

        class CaptchaPolicy(BanPolicy):
            def response_ban(self, response):
                if b"/captcha/" in response.url.encode():
                    return "captcha_redirect"
                return super().response_ban(response)
    """

    def __init__(
        self,
        statuses: Iterable[int] = DEFAULT_BAN_STATUSES,
        patterns: Iterable[re.Pattern[bytes]] = (),
        exceptions: tuple[type[BaseException], ...] = (),
    ):
        self.statuses = frozenset(statuses)
        self.patterns = tuple(patterns)
        self.exceptions = exceptions

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BanPolicy:
        """The policy of the crawl's settings (:meth:`from_config`)."""
        return cls.from_config(for_crawler(crawler))

    @classmethod
    def from_config(cls, config: StickyProxyConfig) -> BanPolicy:
        """The policy of the parsed settings: their statuses, patterns and
        exceptions."""
        return cls(config.ban_statuses, config.ban_patterns, config.ban_exceptions)

    def response_ban(self, response: Response) -> str | None:
        """Return a ban reason for *response*, or ``None`` if it is fine:
        ``status/<code>``, or ``pattern/<index>`` (into the patterns) for a
        2xx body that matches one."""
        if response.status in self.statuses:
            return f"status/{response.status}"
        if self.patterns and response.status < 300:
            body = response.body
            for index, pattern in enumerate(self.patterns):
                if pattern.search(body):
                    return f"pattern/{index}"
        return None

    def exception_ban(self, exception: BaseException) -> str | None:
        """Return a ban reason for a download error, or ``None``:
        ``exception/<class name>``. The middleware gives a ban of this kind
        one retry on the same session before it burns the session, and a
        timeout while the target answered no other request is the
        target's, left to Scrapy's RetryMiddleware whatever this says."""
        if isinstance(exception, self.exceptions):
            return f"exception/{type(exception).__name__}"
        return None


# Errors that may equally be a slow target: see AnswerLog.
TIMEOUTS: tuple[type[Exception], ...] = (
    TxTimeoutError,
    TCPTimedOutError,
    *(
        (exceptions.DownloadTimeoutError,)
        if hasattr(exceptions, "DownloadTimeoutError")
        else ()
    ),
)


# Errors that mean the proxy itself cannot be reached: Scrapy connects only
# to the proxy, so any failure to connect (refused, reset at accept, a
# connect timeout, no route) is the route's, never the exit's.
UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionRefusedError,
    TxConnectError,
    DNSLookupError,
    *(
        cls
        for cls in (
            getattr(exceptions, "DownloadConnectionRefusedError", None),
            getattr(exceptions, "CannotResolveHostError", None),
        )
        if cls is not None
    ),
)


class ProxyAuth:
    """Whose a 407 response is: the proxy's (the credentials are wrong, the
    crawl closes) or the site's (a response like any other).

    A 407 to an https request came through a tunnel the proxy had already
    accepted, so it is the site's (the proxy's refusal of a CONNECT is an
    error, :func:`is_tunnel_407`), unless a browser made it (its proxy
    handshake is its own). Any other 407 is the proxy's while the route has
    not answered anything else yet (the credential probe), and once it has,
    only as the STREAK-th 407 in a row through the route: one site's 407
    among other answers does not close the crawl, credentials revoked
    mid-crawl still do."""

    STREAK = 3

    def __init__(self) -> None:
        self._streaks: dict[str, int] = {}  # route -> 407s since another answer

    def refused(self, route: str, request: Request, status: int) -> bool:
        """Whether this response, come back through *route* (not from a
        cache), is the proxy refusing the credentials."""
        if status != 407:
            self._streaks[route] = 0
            return False
        if request.url.startswith("https:") and not request.meta.get("playwright"):
            return False
        streak = self._streaks.get(route)
        if streak is None:  # nothing else came back through it yet
            return True
        self._streaks[route] = streak = streak + 1
        return streak >= self.STREAK


def is_tunnel_407(exception: Exception) -> bool:
    # Scrapy reports a refused CONNECT only as text:
    # "Could not open CONNECT tunnel with proxy h:p [{'status': 407, ...}]"
    return type(exception).__name__ == "TunnelError" and "'status': 407" in str(
        exception
    )
