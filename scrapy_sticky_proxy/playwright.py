"""scrapy-playwright through sticky sessions: one browser context per session.

A browser does not read ``meta["proxy"]``: its proxy is set per browser
context, when the context is created. :class:`StickyPlaywrightDownloadHandler`
is scrapy-playwright's download handler with one change for requests that
:class:`~scrapy_sticky_proxy.StickyProxyMiddleware` routed: it gives each
such request the context of its session (``meta["playwright_context"]``
becomes ``sticky_proxy:<route>:<session>``), creating it first with the
session's proxy. The page, every request the page makes itself (scripts,
XHR, images) and the session's follow-ups share that context, its exit and
its cookies. A re-roll is a new session, so a new context; the old one is
closed once no request uses it, as are contexts left idle for
``STICKY_PROXY_PLAYWRIGHT_IDLE_TIMEOUT``, and at most
``STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS`` are open (the least recently used
idle one is closed to make room).

The credential: :class:`~scrapy_sticky_proxy.auth.StickyProxyAuth` puts the
session's ``Proxy-Authorization`` on the request only while the download
handler has it, as for any download. This handler takes the header off the
request (so the browser never sends it as a page header) and decodes it
into the ``proxy`` argument of ``Browser.new_context``: the password goes
from there to the browser over Playwright's pipe, in memory, and is never
written to the request, its meta, a log line or a file.

Requests without ``meta["playwright"]`` go through
:class:`~scrapy_sticky_proxy.StickyProxyDownloadHandler` (the session-keyed
connection pool), as with the addon's own handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from . import _meta as M
from .config import for_crawler
from .errors import ConfigError
from .handler import StickyProxyDownloadHandler

try:
    from playwright.async_api import Error as PlaywrightError
    from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler

    from ._browser import network_error, proxy_option, session_context_kwargs
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "scrapy_sticky_proxy.playwright needs scrapy-playwright: "
        "pip install 'scrapy-sticky-proxy[playwright]'"
    ) from exc

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

MAX_CONTEXTS = "STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS"  # named in messages
_STATS = "sticky_proxy/browser_contexts"
_PREFIX = "sticky_proxy:"  # names of our contexts
_HEADER = b"Proxy-Authorization"


@dataclass
class _Lease:
    """One session's browser context, as this handler tracks it."""

    session: str  # "sticky_proxy:<route>:<session id>"
    context: str  # its browser context's name: the session's, numbered
    key: str
    generation: int
    # In memory only, to open the context again if the browser restarts.
    proxy: dict[str, str] = field(repr=False)
    users: int = 0  # requests downloading through it now
    last_used: float = field(default_factory=time.monotonic)
    burned: bool = False  # a newer generation of its key exists


class StickyPlaywrightDownloadHandler(
    ScrapyPlaywrightDownloadHandler, StickyProxyDownloadHandler
):
    """scrapy-playwright's handler with one browser context per proxy session.

    ``DOWNLOAD_HANDLERS = {"http": ..., "https": ...}`` with this class
    (the module path is ``scrapy_sticky_proxy.playwright``).
    """

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        settings = crawler.settings
        # A handler routes nothing: a missing proxy URL is the middleware's.
        sticky = for_crawler(crawler, require_proxy=False)
        limit = sticky.playwright_max_contexts
        theirs = self.config.max_contexts
        if theirs is not None and theirs < limit:
            raise ConfigError(
                MAX_CONTEXTS,
                f"is {limit}, above PLAYWRIGHT_MAX_CONTEXTS ({theirs}): requests "
                "would wait for a context that is never closed; set it at or "
                "below PLAYWRIGHT_MAX_CONTEXTS",
            )
        if self.config.use_threaded_loop:
            raise NotConfigured(
                "scrapy-sticky-proxy's playwright handler needs Playwright on "
                "the reactor's own event loop (not Windows' threaded loop)"
            )
        self.max_contexts = limit
        self.idle_timeout = sticky.playwright_idle_timeout
        self.context_wait = settings.getfloat("DOWNLOAD_TIMEOUT") or 180.0
        self.encoding = settings.get("HTTPPROXY_AUTH_ENCODING") or "latin-1"
        concurrency = settings.getint("CONCURRENT_REQUESTS")
        if concurrency > limit:
            logger.warning(
                "%s (%d) is below CONCURRENT_REQUESTS (%d): browser requests "
                "of new sessions may wait for a context to close",
                MAX_CONTEXTS,
                limit,
                concurrency,
            )
        self._leases: OrderedDict[str, _Lease] = OrderedDict()  # by session, LRU first
        self._contexts: dict[str, _Lease] = {}  # by context name
        self._by_key: dict[str, str] = {}  # session key -> its newest session
        self._numbers = itertools.count(1)
        self._opening = asyncio.Lock()
        self._released = asyncio.Event()

    async def download_request(self, request: Request) -> Response:
        meta = request.meta
        if not meta.get("playwright") or M.ROUTE not in meta or meta.get(M.DONT):
            return await super().download_request(request)
        # Never sent by the browser as a page header (it would reach the
        # site through an https tunnel); it only opens the context.
        auth = request.headers.get(_HEADER)
        request.headers.pop(_HEADER, None)
        lease = await self._lease(request, auth)
        meta["playwright_context"] = lease.context
        try:
            return await super().download_request(request)
        except PlaywrightError as exc:
            raise network_error(exc) from exc
        finally:
            await self._release(lease)

    async def _create_browser_context(
        self, name: str, context_kwargs: dict[str, Any] | None, spider: Any = None
    ) -> Any:
        """Every context of ours is created with its session's proxy, also
        when scrapy-playwright reopens one (a page that found its context
        closed): never without it, which would go direct."""
        if name.startswith(_PREFIX):
            lease = self._contexts.get(name)
            if lease is None:
                raise RuntimeError(
                    f"the browser context {name} was closed; it is not opened "
                    "again without its session's proxy"
                )
            context_kwargs = session_context_kwargs(context_kwargs, lease.proxy)
        return await super()._create_browser_context(name, context_kwargs, spider)

    # -- contexts ----------------------------------------------------------------

    async def _lease(self, request: Request, auth: bytes | None) -> _Lease:
        """The request's session context, open and held."""
        meta = request.meta
        session = f"{_PREFIX}{meta[M.ROUTE]}:{meta.get(M.SESSION)}"
        key = str(meta.get(M.KEY))
        generation = meta.get(M.GENERATION)
        generation = generation if isinstance(generation, int) else 0
        async with self._opening:
            await self._retire(key, generation, session)
            lease = self._leases.get(session)
            if lease is None:
                await self._make_room()
                lease = _Lease(
                    session,
                    f"{session}:{next(self._numbers)}",
                    key,
                    generation,
                    proxy_option(meta, auth, self.encoding),
                )
                self._contexts[lease.context] = lease
            if lease.context not in self.context_wrappers:
                # New, or again after the browser restarted (it closed them all).
                given = meta.get("playwright_context_kwargs")
                try:
                    await self._create_browser_context(
                        lease.context, given, self._crawler.spider
                    )
                except BaseException:
                    if session not in self._leases:
                        del self._contexts[lease.context]
                    raise
            if session not in self._leases:
                self._leases[session] = lease
                self._inc("opened")
                assert self.stats is not None
                self.stats.max_value(f"{_STATS}/max_open", len(self._leases))
            self._leases.move_to_end(session)
            lease.users += 1
            lease.last_used = time.monotonic()
        return lease

    async def _release(self, lease: _Lease) -> None:
        lease.users -= 1
        lease.last_used = time.monotonic()
        if lease.users <= 0 and lease.burned:
            await self._close_context(lease, "burned")
        self._released.set()

    async def _retire(self, key: str, generation: int, session: str) -> None:
        """A request of *key* at a newer generation: the session its older
        context belongs to is burned; close that context once unused."""
        old = self._leases.get(self._by_key.get(key, ""))
        if old is not None and old.session != session:
            if old.generation > generation:
                return  # an older generation's straggler: keep the newest
            old.burned = True
            if old.users <= 0:
                await self._close_context(old, "burned")
        self._by_key[key] = session

    async def _make_room(self) -> None:
        """Close idle contexts past the idle timeout, then, at the bound,
        the least recently used idle one; wait (bounded) while all are busy."""
        now = time.monotonic()
        if self.idle_timeout:
            for lease in list(self._leases.values()):
                if now - lease.last_used < self.idle_timeout:
                    break  # LRU order: the rest were used more recently
                if self._idle(lease):
                    await self._close_context(lease, "idle")
        deadline = now + self.context_wait
        while len(self._leases) >= self.max_contexts:
            victim = next((x for x in self._leases.values() if self._idle(x)), None)
            if victim is not None:
                await self._close_context(victim, "evicted")
                continue
            self._released.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                self._inc("wait_timeouts")
                raise TimeoutError(
                    f"every one of the {self.max_contexts} browser contexts "
                    f"({MAX_CONTEXTS}) stayed busy for {self.context_wait:.0f} s"
                )
            try:
                await asyncio.wait_for(self._released.wait(), left)
            except asyncio.TimeoutError:
                continue

    def _idle(self, lease: _Lease) -> bool:
        if lease.users > 0:
            return False
        wrapper = self.context_wrappers.get(lease.context)
        # Pages kept by the spider (playwright_include_page) keep it open.
        return wrapper is None or not wrapper.context.pages

    async def _close_context(self, lease: _Lease, why: str) -> None:
        # Forgotten first: from here on, nothing opens or uses it again
        # (its name is never reused).
        if self._leases.get(lease.session) is lease:
            del self._leases[lease.session]
        if self._by_key.get(lease.key) == lease.session:
            del self._by_key[lease.key]
        self._contexts.pop(lease.context, None)
        wrapper = self.context_wrappers.get(lease.context)
        if wrapper is not None:
            try:
                await wrapper.context.close()
            except Exception as exc:  # the browser went away: nothing to close
                logger.debug("Closing browser context %s: %r", lease.context, exc)
            self.context_wrappers.pop(lease.context, None)
        self._inc(f"closed/{why}")
        logger.debug("Closed browser context %s (%s)", lease.context, why)
        self._released.set()

    def _inc(self, name: str) -> None:
        assert self.stats is not None
        self.stats.inc_value(f"{_STATS}/{name}")
