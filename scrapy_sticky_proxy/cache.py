"""Scrapy's HTTP cache and bans: ban pages stay out, re-rolls reach the network.

HttpCacheMiddleware (900) stores a response on its way out before
StickyProxyMiddleware (690) sees it, and answers a re-roll (same URL, so same
fingerprint) from the cache: a cached ban page would be "re-rolled" against
itself until the budget ran out. So:

* :class:`BanCacheGuard` sits at 950, where it sees responses before the
  cache does: a response the ban policy calls a ban gets ``dont_cache`` so
  the cache does not store it;
* every copy the middleware makes (re-roll, same-session retry) carries
  ``dont_cache``, so the cache does not answer it, nor the redirects it
  leads to (a re-roll restarts from the spider's request: its first hop
  may be a 302 to the page whose stored answer was the ban's redirect);
  the guard takes the flag off again when the copy's response comes back,
  so a good page is stored (replacing any ban page an older run left
  there), and, for a redirect, StickyProxyMiddleware sets it again after
  the cache stored it, for the redirect's copy;
* a ban page served *from* the cache (stored by an older run) is not the
  current session's fault: it is fetched again through the network on the
  same session, and counted as ``sticky_proxy/cached_bans``.

The user's own ``dont_cache`` is kept aside in ``meta[M.CACHE_BYPASS]`` and
restored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from . import _meta as M
from ._policy_guard import ban_policy
from ._reroll import Redirects
from ._wiring import middleware_names
from .bans import BanPolicy
from .config import for_crawler

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

GUARD = "scrapy_sticky_proxy.cache.BanCacheGuard"
GUARD_PRIORITY = 950  # after HttpCacheMiddleware (900): its responses first
_CACHE = "scrapy.downloadermiddlewares.httpcache.HttpCacheMiddleware"


def check_guard(settings: BaseSettings) -> bool:
    """Whether the HTTP cache is on; warn if it is on without the guard after
    it (ban pages would then be stored, though re-rolls still bypass them)."""
    if not settings.getbool("HTTPCACHE_ENABLED"):
        return False
    names = middleware_names(settings)
    guarded = GUARD in names and (
        _CACHE not in names or names.index(GUARD) > names.index(_CACHE)
    )
    if not guarded:
        logger.warning(
            "HTTPCACHE_ENABLED without %s after HttpCacheMiddleware: ban pages "
            "may be stored in the HTTP cache; add it at %d (the addon does)",
            GUARD,
            GUARD_PRIORITY,
        )
    return True


def bypass(meta: dict[str, Any]) -> None:
    """Keep this request away from the cache (neither answered nor stored)."""
    if M.CACHE_BYPASS not in meta:
        meta[M.CACHE_BYPASS] = bool(meta.get("dont_cache", False))
    meta["dont_cache"] = True


def restore(meta: dict[str, Any]) -> None:
    """Give the request back the user's ``dont_cache``."""
    if M.CACHE_BYPASS in meta:
        if meta.pop(M.CACHE_BYPASS):
            meta["dont_cache"] = True
        else:
            meta.pop("dont_cache", None)


class BanCacheGuard:
    """Downloader middleware at 950: ban pages never reach the HTTP cache.

    Wired by the addon; with manual wiring, add
    ``"scrapy_sticky_proxy.cache.BanCacheGuard": 950`` to
    DOWNLOADER_MIDDLEWARES when HTTPCACHE_ENABLED is on.
    """

    def __init__(self, crawler: Crawler):
        if not crawler.settings.getbool("HTTPCACHE_ENABLED"):
            raise NotConfigured("HTTPCACHE_ENABLED is off")
        config = for_crawler(crawler)
        if not config.enabled:
            raise NotConfigured("STICKY_PROXY_ENABLED is False")
        # Its own copy: a policy that keeps state sees each response once.
        self.policy: BanPolicy = ban_policy(crawler, quiet=True)
        self._redirects = Redirects(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BanCacheGuard:
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        meta = request.meta
        copy = M.CACHE_BYPASS in meta
        restore(meta)
        if copy and self._redirects.follow(request, response):
            meta[M.CACHE_HOP] = True  # StickyProxyMiddleware keeps the next away
        if (
            M.ROUTE in meta
            and not meta.get(M.DONT)
            and "cached" not in response.flags
            # A 407: the gateway's (a next run would read it as the site's).
            and (response.status == 407 or self.policy.response_ban(response))
        ):
            bypass(meta)
        return response
