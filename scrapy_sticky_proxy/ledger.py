"""The ledger: every request the middleware routed ends as a response to the
spider, or as a record.

A request is *open* from the moment the middleware routes it until its
outcome is known. Copies made on the way (a re-roll, a same-session retry,
a redirect, RetryMiddleware's retry) carry the same id in
``meta[M.LEDGER]``, so they continue it; a request a spider builds from
``response.meta`` after the response was delivered starts a new one.

Outcomes:

* a response leaves the downloader middlewares for the engine (seen by
  :class:`StickyProxyLedger`, the last of them): delivered, no record;
* the middleware gives up (re-rolls spent, an outage past its timeout, a
  spider closing while the request waited): a ``gave_up`` record;
* a download error no middleware turned into a new request (RetryMiddleware
  spent its tries, a TLS error, a request another component ignored): a
  ``failed`` record, written by :class:`StickyProxyLedger`;
* the ``STICKY_PROXY_KEY`` function gave no key for a request, which is
  then never routed (:mod:`._key_guard`): a ``failed`` record;
* the scheduler dropped a copy as a duplicate (a redirect to a URL already
  fetched, such as the one captcha page every banned exit is sent to; our
  own copies are ``dont_filter``): the spider's request behind it gets no
  response, so a ``failed`` record naming that request, with reason
  ``dropped/duplicate``;
* Scrapy's OffsiteMiddleware dropped a copy when it was scheduled (a
  redirect to another site, with ``allowed_domains``): with ``JOBDIR`` or
  ``SCHEDULER_PERSIST`` a ``failed`` record at once, with reason
  ``dropped/offsite``; otherwise it is still open at the close, below;
* still open when the spider closed: a ``failed`` record with reason
  ``lost/spider_closed``. A copy that waited in a scheduler that does not
  persist, or a request a middleware after ours dropped with no error that
  any middleware sees (RedirectMiddleware past ``REDIRECT_MAX_TIMES``,
  HttpCompressionMiddleware past ``DOWNLOAD_MAXSIZE``). With ``JOBDIR`` or
  ``SCHEDULER_PERSIST`` the copies are kept for the next run, so an entry
  is closed as soon as its request is scheduled
  (:class:`._lifecycle.Lifecycle`): the queue holds it, and another
  process may take it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from scrapy.downloadermiddlewares.offsite import OffsiteMiddleware
from scrapy.exceptions import IgnoreRequest

from . import _meta as M
from ._key_guard import KeyFailed
from ._live import live_sessions
from ._records import give_up_record, keep_record
from ._reroll import restart

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .state.store import HealthStore

logger = logging.getLogger(__name__)

LEDGER_MIDDLEWARE = "scrapy_sticky_proxy.ledger.StickyProxyLedger"
# Below every middleware that may turn a response or an error into a new
# request (redirects 600, retries 550, offsite 50): it sees final outcomes.
LEDGER_PRIORITY = 10
LOST = "lost/spider_closed"
DUPLICATE = "dropped/duplicate"
OFFSITE = "dropped/offsite"
MAX_REASONS = 4096  # kept of a request's reasons (meta): above MAX_REROLLS + 1
_UNSET: Any = object()


class Ledger:
    """Open requests by id, and the records of those that will not reach the
    spider. Ids are unique across processes (a copy may be queued in Redis
    and continued by another crawler, which then opens its own entry)."""

    def __init__(
        self,
        crawler: Crawler,
        store: HealthStore,
        redact: Callable[[str], str],
        inc: Callable[[str], None],
    ) -> None:
        self._open: dict[int, Request] = {}
        self._queued: Request | None = None  # see queued()
        self._offsite: Any = _UNSET  # see _offsite_drops()
        # Counted from a random 63-bit start: two processes' ids meet only if
        # their starts are within a run's requests of each other (about one
        # chance in 10**11 for 100 million requests). An int, not a string
        # made per request (python -m bench.per_request).
        self._ids = itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)
        self._crawler = crawler
        self._store = store
        self._redact = redact
        self._inc = inc
        # Requests alive per session key: idle connections of sessions
        # with none left are closed.
        self.live = live_sessions(crawler)

    def __len__(self) -> int:
        return len(self._open)

    def routed(self, request: Request, meta: dict[str, Any]) -> None:
        """*request* (whose meta is *meta*) is open, or goes on (a copy)."""
        lid = meta.get(M.LEDGER)
        if type(lid) is not int or lid not in self._open:  # untrusted: no bool
            lid = meta[M.LEDGER] = next(self._ids)
        self._open[lid] = request  # the latest copy names the request

    def close(self, meta: dict[str, Any]) -> Request | None:
        """End the request *meta* belongs to; the request if it was open."""
        lid = meta.get(M.LEDGER)
        return self._open.pop(lid, None) if type(lid) is int else None

    def queued(self, request: Request) -> None:
        """A queue that persists holds *request* now (``request_scheduled``):
        it may wait there past this run, or another process may take it.
        Kept until the scheduler says whether it took it: a duplicate is
        dropped right after (:meth:`dropped`). Not a copy Scrapy's
        OffsiteMiddleware drops in the same signal (a redirect to another
        site's captcha page): that one is recorded."""
        self._queued = None
        if self.close(request.meta) is None:
            return
        if self._offsite_drops(request):
            self.record(request, [*reasons(request), OFFSITE], "failed")
        else:
            self._queued = request

    def dropped(self, request: Request) -> None:
        """The scheduler dropped *request* as a duplicate (``request_dropped``)."""
        was_open = self.close(request.meta) is not None or request is self._queued
        self._queued = None
        if was_open:
            self.record(request, [*reasons(request), DUPLICATE], "failed")

    def failed(self, request: Request, reason: str) -> None:
        """A routed request ended in a download error that no middleware
        turned into a new request."""
        if self.close(request.meta) is not None:
            self.record(request, [*reasons(request), reason], "failed")

    def give_up(self, request: Request, why: list[str]) -> NoReturn:
        self.record(request, why, "gave_up")
        raise IgnoreRequest(self._redact(f"sticky proxy gave up: {', '.join(why)}"))

    def spider_closed(self) -> None:
        """Record what is still open. A queue that persists let go of what
        it holds (:meth:`queued`), and nothing is in flight by now: what is
        left, a middleware after ours dropped with no error any middleware
        sees (RedirectMiddleware past REDIRECT_MAX_TIMES, HttpCompression-
        Middleware past DOWNLOAD_MAXSIZE), or, in a queue that does not
        persist, a copy that waited there."""
        requests = list(self._open.values())
        self._open.clear()
        for request in requests:
            try:
                self.record(request, [*reasons(request), LOST], "failed")
            except Exception as exc:  # one request's meta: not the others'
                logger.error(
                    "Could not record a request lost at the close (%s)",
                    type(exc).__name__,
                )

    def _offsite_drops(self, request: Request) -> bool:
        """Whether Scrapy's OffsiteMiddleware (or the user's subclass) drops
        *request* when it is scheduled: its own test, asked once more."""
        if self._offsite is _UNSET:
            self._offsite = self._crawler.get_downloader_middleware(OffsiteMiddleware)
        offsite = self._offsite
        if offsite is None or request.dont_filter or request.meta.get("allow_offsite"):
            return False
        try:
            return not offsite.should_follow(request, self._crawler.spider)
        except Exception:  # the user's override: not ours to judge
            return False

    def record(self, request: Request, why: list[str], outcome: str) -> None:
        """Record a routed request that will not reach the spider (a warm-up
        request is no spider's: its outcome is the warm-up's), named as the
        spider made it (a redirect's target is not the request to replay)."""
        self.close(request.meta)
        request = restart(request)
        if M.WARMUP in request.meta:
            return
        spider = self._crawler.spider
        record = give_up_record(request, why, self._redact)
        record["outcome"] = outcome
        record["spider"] = getattr(spider, "name", None)
        self._inc(outcome)
        logger.warning(
            "%(verb)s %(url)s after %(attempts)d attempts (%(reasons)s)",
            {
                "verb": "Gave up on" if outcome == "gave_up" else "Failed:",
                "url": record["url"],
                "attempts": len(why),
                "reasons": ", ".join(record["reasons"]),
            },
            extra={"spider": spider},
        )
        if not keep_record(self._store, record):
            self._inc("gave_up_write_errors")


def reasons(request: Request) -> list[str]:
    """Why earlier tries of *request* failed (meta: untrusted: its text
    only, the latest MAX_REASONS)."""
    value = request.meta.get(M.REASONS)
    if not isinstance(value, list):
        return []
    return [r for r in value[-MAX_REASONS:] if isinstance(r, str)]


def persistent(crawler: Crawler) -> bool:
    """Whether requests left in the scheduler at close survive the run."""
    settings = crawler.settings
    return bool(settings.get("JOBDIR")) or settings.getbool("SCHEDULER_PERSIST")


def sticky_middleware(crawler: Crawler) -> Any:
    """The crawl's StickyProxyMiddleware (None if it is not enabled), for the
    helper middlewares that work with it; ask once the middlewares exist."""
    from .middleware import StickyProxyMiddleware

    return crawler.get_downloader_middleware(StickyProxyMiddleware)


class StickyProxyLedger:
    """The last downloader middleware: records requests that end in an error
    (``failed``), and closes the ledger entry of delivered responses. The
    addon installs it at priority 10; inert without StickyProxyMiddleware."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self._owner: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyLedger:
        return cls(crawler)

    def _middleware(self) -> Any:
        if self._owner is None:
            self._owner = sticky_middleware(self.crawler)
        return self._owner

    def process_response(self, request: Request, response: Response) -> Response:
        owner = self._middleware()
        if owner is not None:
            owner.ledger.close(request.meta)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        owner = self._middleware()
        if owner is None:
            return
        if isinstance(exception, KeyFailed):  # never routed: no key for it
            owner.ledger.record(request, [exception.reason], "failed")
        else:
            owner.ledger.failed(request, f"failed/{type(exception).__name__}")
