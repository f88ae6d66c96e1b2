"""Warm-ups that end through no fault of their session, said once a crawl:
a bug in the STICKY_PROXY_WARMUP function (it raises, or returns something
else than requests), which closes the spider at once with a message naming
the setting and what the function did (``sticky_proxy_warmup_error``); and
a warm-up request that a downloader middleware before ours held past the
warm-up's deadline, which is unjudged (:mod:`._warmup_runs` decides that)."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

from ._warmup_requests import WrongReturn
from .routing.warmup import WARMUP_ERROR

if TYPE_CHECKING:
    from scrapy import Request

    from .middleware import StickyProxyMiddleware

logger = logging.getLogger("scrapy_sticky_proxy.middleware")


class WarmupFaults:
    def __init__(self, mw: StickyProxyMiddleware):
        policy = mw.config.warmup
        assert policy is not None
        self.policy = policy
        self.count = mw.count
        self.close = mw._close
        self.redact = mw.config.redact
        self._said: set[str] = set()

    def broken(self, request: Request, exc: Exception) -> None:
        """The warm-up function failed for *request*: counted
        (``warmup/errors``), said once (a raise with its traceback), and the
        spider closes. No session is judged: none was tried."""
        self.count.inc("warmup/errors")
        if "error" in self._said:
            return
        self._said.add("error")
        if isinstance(exc, WrongReturn):
            what = str(exc)
        else:
            what = f"raised {type(exc).__name__}: {exc}"
            text = "".join(traceback.format_exception(exc)).rstrip()
            logger.error(
                "STICKY_PROXY_WARMUP raised for %s:\n%s",
                self.redact(request.url),
                self.redact(text),
            )
        func = self.policy.warmup
        name = (
            f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
        )
        self.close(WARMUP_ERROR, self.redact(f"STICKY_PROXY_WARMUP ({name}) {what}"))

    def held(self, sent: Request | None) -> None:
        """A warm-up request did not reach our middleware by the deadline: a
        downloader middleware before it held it, maybe one that waits for a
        request that waits for this warm-up. Counted (``warmup/held``), said
        once."""
        self.count.inc("warmup/held")
        if "held" in self._said or sent is None:
            return
        self._said.add("held")
        logger.warning(
            "The warm-up request %s never reached StickyProxyMiddleware within "
            "STICKY_PROXY_WARMUP_TIMEOUT (%g s): a downloader middleware before "
            "it held it. If that one waits for a request of the session being "
            "warmed up, each waits for the other until the deadline: give such "
            "requests meta['dont_sticky_proxy'] or a sticky_proxy_key of their "
            "own. Unjudged: nothing burned",
            self.redact(sent.url),
            self.policy.timeout,
        )
