"""Cookies per session: each session gets its own jar in Scrapy's
CookiesMiddleware, so cookies a site set for one exit are only ever sent
from that exit.

The jar is chosen through ``meta["cookiejar"]``: :meth:`SessionJars.assign`
writes ``sticky_proxy/<route>/<session id>`` there (no credential) unless the
user set a value of their own. StickyProxyMiddleware runs before
CookiesMiddleware (690 < 700) so that the jar is chosen before the Cookie
header is built, and sees each response after the jar took its Set-Cookie.

Memory stays bounded: an empty jar is dropped as soon as its request ends,
a burned session's jar when the ban is seen, and the least recently used
jar once more than ``STICKY_PROXY_MAX_COOKIE_JARS`` hold cookies.

With ``STICKY_PROXY_SHARE_COOKIES``, :class:`StickyProxyCookieShare` (695,
between the two) reads a session's cookies from Redis before each of its
requests and writes them back after each response that set one
(:mod:`.state.redis_cookies`), and deletes a burned session's. When Redis
fails, it does without for a period that grows (:mod:`.state.backoff`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ._stats import PREFIX, Counter, stats_wanted
from .config import for_crawler
from .state.backoff import Admission, Outage
from .state.redis_cookies import decode, encode, redis_key

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

JAR_PREFIX = "sticky_proxy/"  # meta["cookiejar"] values of ours start so
SHARE_MIDDLEWARE = "scrapy_sticky_proxy.cookies.StickyProxyCookieShare"
SHARE_PRIORITY = 695  # after StickyProxyMiddleware, before CookiesMiddleware
SHARE_TIMEOUT = 2.0  # seconds one Redis read or write may take
BURNED_KEPT = 10_000  # burned jar ids remembered, not to be written back

#: Sent with ``jar=`` when a session's jar is dropped because it is burned.
jar_burned = object()


def our_jar(meta: dict[str, Any]) -> str | None:
    """The session jar *meta* names, if it names one of ours."""
    jar = meta.get("cookiejar")
    return jar if isinstance(jar, str) and jar.startswith(JAR_PREFIX) else None


def cookie_jars(crawler: Crawler) -> dict[Any, Any] | None:
    """CookiesMiddleware's jars (keyed by ``meta["cookiejar"]``), or None
    when it is not installed or the engine is not built yet."""
    from scrapy.downloadermiddlewares.cookies import CookiesMiddleware

    downloader = getattr(crawler.engine, "downloader", None)
    manager = getattr(downloader, "middleware", None)
    for mw in getattr(manager, "middlewares", ()):
        if isinstance(mw, CookiesMiddleware):
            return mw.jars
    return None


class SessionJars:
    """The middleware's side: which jar a request uses, and which are dropped."""

    def __init__(self, crawler: Crawler, cap: int, count: Counter):
        self.crawler = crawler
        self.cap = cap
        self._count = count
        self._jars: dict[Any, Any] | None = None
        self._looked = False
        # Jars that hold cookies, least recently used first.
        self.held: OrderedDict[str, None] = OrderedDict()
        crawler.signals.connect(self.flush, signal=stats_wanted)

    @property
    def jars(self) -> dict[Any, Any] | None:
        if self._jars is None and not self._looked:
            self._jars = cookie_jars(self.crawler)
            # Looked once the engine is there: CookiesMiddleware is in it or
            # not (COOKIES_ENABLED with the middleware set to None).
            self._looked = self.crawler.engine is not None
        return self._jars

    def bind(self, jars: dict[Any, Any]) -> None:
        """Use these jars (a CookiesMiddleware built outside an engine)."""
        self._jars = jars

    def assign(self, meta: dict[str, Any], route: str, session: str) -> None:
        """The session's jar for this request, unless the user chose one."""
        if "cookiejar" in meta and our_jar(meta) is None:
            return
        meta["cookiejar"] = f"{JAR_PREFIX}{route}/{session}"

    def unrouted(self, meta: dict[str, Any]) -> None:
        """A request we do not route keeps no session's jar (one copied from
        a routed response's meta would send its exit's cookies elsewhere)."""
        if our_jar(meta) is not None:
            del meta["cookiejar"]

    def settled(self, meta: dict[str, Any]) -> None:
        """The request ended on its session (its cookies, if any, are in the
        jar now): an empty jar goes, one holding cookies is kept, within
        the cap."""
        jar = meta.get("cookiejar")  # our_jar(), inline: once per response
        jars = self.jars
        if jars is None or not isinstance(jar, str) or not jar.startswith(JAR_PREFIX):
            return
        cookies = jars.get(jar)
        if cookies is None:
            return
        held = self.held
        if not len(cookies):
            del jars[jar]
            held.pop(jar, None)
            return
        held[jar] = None
        held.move_to_end(jar)
        if len(held) > self.cap:
            old, _ = held.popitem(last=False)
            jars.pop(old, None)
            self._count.inc("cookie_jars/dropped/evicted")

    def burned(self, meta: dict[str, Any]) -> None:
        """The session is burned: nothing of its identity is sent again."""
        jar = our_jar(meta)
        jars = self.jars
        if jar is None or jars is None:
            return
        self.held.pop(jar, None)
        self.crawler.signals.send_catch_log(jar_burned, jar=jar)
        # CookiesMiddleware makes a jar for every request: count those
        # that held a cookie.
        if len(jars.pop(jar, None) or ()):
            self._count.inc("cookie_jars/dropped/burned")

    def flush(self) -> None:
        stats = self.crawler.stats
        if stats is not None:
            stats.set_value(PREFIX + "cookie_jars", len(self.held))


class StickyProxyCookieShare:
    """A session's cookies, visible to every process that uses the session
    (``STICKY_PROXY_SHARE_COOKIES``). Costs one Redis GET per routed request
    and one SET per response that sets a cookie, each waited for (at most
    :data:`SHARE_TIMEOUT`), and one DEL per burned session, in the
    background. When Redis fails, each process keeps its own jars for a
    period that grows while it keeps failing
    (:class:`.state.backoff.Outage`)."""

    def __init__(self, crawler: Crawler):
        config = for_crawler(crawler)
        if not (config.enabled and config.cookie_jars and config.share_cookies):
            raise NotConfigured("STICKY_PROXY_SHARE_COOKIES is off")
        self.crawler = crawler
        self.config = config
        self.count = Counter(crawler.stats)
        self.client: Any = None
        self._jars: dict[Any, Any] | None = None
        self.outage = Outage()
        self._skipped = 0
        # Jars of burned sessions: not written back by a late response.
        self._burned: OrderedDict[str, None] = OrderedDict()
        self._deleting: set[asyncio.Task[Any]] = set()
        crawler.signals.connect(self.closed, signal=signals.spider_closed)
        crawler.signals.connect(self.burned, signal=jar_burned)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyCookieShare:
        return cls(crawler)

    @property
    def jars(self) -> dict[Any, Any] | None:
        if self._jars is None:
            self._jars = cookie_jars(self.crawler)
        return self._jars

    async def process_request(self, request: Request) -> None:
        jar, jars = our_jar(request.meta), self.jars
        if jar is None or jars is None or jar in self._burned:
            return
        raw = await self._call("get", redis_key(self.config.namespace, jar))
        if raw is None:
            return
        cookies = decode(raw)
        if cookies is None:
            self.count.inc("cookie_jars/shared/skipped")
            self._skipped += 1
            if self._skipped == 1:
                logger.warning(
                    "Skipped a session's cookies in Redis that were not ours "
                    "(sticky_proxy/cookie_jars/shared/skipped counts them)"
                )
            return
        target = jars[jar]
        for cookie in cookies:
            target.set_cookie(cookie)
        self.count.inc("cookie_jars/shared/loaded")

    async def process_response(self, request: Request, response: Response) -> Response:
        jar = our_jar(request.meta)
        if jar is None or jar in self._burned or b"Set-Cookie" not in response.headers:
            return response
        jars = self.jars
        cookies = jars.get(jar) if jars is not None else None
        if cookies is None:
            return response
        value = encode(cookies, self.config.secrets)
        if value is not None:
            key = redis_key(self.config.namespace, jar)
            if await self._call("set", key, value, ex=self.config.redis_ttl):
                self.count.inc("cookie_jars/shared/saved")
        return response

    def burned(self, jar: str) -> None:
        """A burned session's cookies go from Redis too (one DEL, not waited
        for), and are not written back by its requests still in flight."""
        burned = self._burned
        burned[jar] = None
        if len(burned) > BURNED_KEPT:
            burned.popitem(last=False)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: no crawl running, nothing to share
            return
        task = loop.create_task(self._delete(jar))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def _delete(self, jar: str) -> None:
        key = redis_key(self.config.namespace, jar)
        if await self._call("delete", key) is not None:
            self.count.inc("cookie_jars/shared/deleted")

    async def _call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command, waited for at most SHARE_TIMEOUT; None if it
        failed, or was not sent because Redis failed a moment ago (the crawl
        goes on with this process's jar)."""
        outage = self.outage
        admission: Admission = outage.admit()
        if admission == "skip":
            self.count.inc("cookie_jars/shared/bypassed")
            return None
        try:
            if self.client is None:
                self.client = self._connect()
            method = getattr(self.client, command)
            result = await asyncio.wait_for(method(*args, **kwargs), SHARE_TIMEOUT)
        except asyncio.CancelledError:
            outage.abandoned(admission)
            raise
        except Exception as exc:
            self.count.inc("cookie_jars/shared/errors")
            if outage.failed(admission):
                logger.warning(
                    "Could not share a session's cookies through Redis (%s): "
                    "each process keeps its own jars for %.0f s, longer while "
                    "Redis keeps failing (sticky_proxy/cookie_jars/shared/errors "
                    "and .../bypassed count them)",
                    type(exc).__name__,
                    outage.delay,
                )
            return None
        if outage.succeeded():
            logger.info("Redis answers again: sharing sessions' cookies again")
        return result

    def _connect(self) -> Any:
        import redis.asyncio as aioredis

        from .state.redis_layout import DECODE, quiet_client

        config = self.config
        options = {**quiet_client(), **config.redis_params, **DECODE}
        assert config.redis_url is not None
        return aioredis.from_url(config.redis_url, **options)

    async def closed(self) -> None:
        if self._deleting:  # each bounded by SHARE_TIMEOUT
            await asyncio.wait(list(self._deleting), timeout=2 * SHARE_TIMEOUT)
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.aclose(), SHARE_TIMEOUT)
            except Exception:
                logger.debug("closing the cookie-sharing Redis client failed")
