"""``ADDONS = {"scrapy_sticky_proxy.Addon": 100}`` wires everything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .auth import AUTH_MIDDLEWARE, AUTH_PRIORITY
from .config import check_settings
from .cookies import SHARE_MIDDLEWARE, SHARE_PRIORITY
from .ledger import LEDGER_MIDDLEWARE, LEDGER_PRIORITY

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


MIDDLEWARE = "scrapy_sticky_proxy.StickyProxyMiddleware"
# Before CookiesMiddleware (700), which builds the Cookie header from the
# session's jar, and HttpProxyMiddleware (750), which reads the environment.
MIDDLEWARE_PRIORITY = 690
INHERIT = "scrapy_sticky_proxy.StickyProxyInheritMiddleware"
EXTENSION = "scrapy_sticky_proxy.StickyProxyStats"
CACHE_GUARD = "scrapy_sticky_proxy.cache.BanCacheGuard"  # inert without the cache
HANDLER = "scrapy_sticky_proxy.StickyProxyDownloadHandler"
_DEFAULT_HANDLER = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"


class Addon:
    """Wires scrapy-sticky-proxy into a crawl:
    ``ADDONS = {"scrapy_sticky_proxy.Addon": 100}`` in ``settings.py``.

    :meth:`update_settings` first checks every ``STICKY_PROXY_*`` setting
    (a bad one stops the crawl with a :class:`ConfigError` before any
    component is built), then installs, at ``addon`` priority (so a value
    of your own in ``settings.py`` wins):

    * :class:`StickyProxyMiddleware`, before Scrapy's ``CookiesMiddleware``
      and ``HttpProxyMiddleware``, and the package's helper downloader
      middlewares: the cookie sharing (inert unless
      ``STICKY_PROXY_SHARE_COOKIES``), the guard that keeps ban pages out of
      the HTTP cache (inert without it), the ledger that records requests
      ending in a download error, and the last one, next to the downloader,
      that applies the proxy credentials;
    * :class:`StickyProxyInheritMiddleware` (inert unless
      ``STICKY_PROXY_INHERIT_KEY``);
    * the extension :class:`StickyProxyStats`;
    * :class:`StickyProxyDownloadHandler` for ``http`` and ``https``, where
      those schemes use Scrapy's default handler.
    """

    def update_settings(self, settings: BaseSettings) -> None:
        """Check the settings, then install the components (above)."""
        # Before any component is built: a bad setting is one line, first.
        check_settings(settings)
        middlewares = settings["DOWNLOADER_MIDDLEWARES"]
        middlewares.set(MIDDLEWARE, MIDDLEWARE_PRIORITY, "addon")
        middlewares.set(SHARE_MIDDLEWARE, SHARE_PRIORITY, "addon")  # inert unless on
        middlewares.set(CACHE_GUARD, 950, "addon")
        middlewares.set(LEDGER_MIDDLEWARE, LEDGER_PRIORITY, "addon")
        middlewares.set(AUTH_MIDDLEWARE, AUTH_PRIORITY, "addon")
        settings["SPIDER_MIDDLEWARES"].set(INHERIT, 600, "addon")
        settings["EXTENSIONS"].set(EXTENSION, 500, "addon")
        handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
        for scheme in ("http", "https"):
            current = handlers.get(scheme)
            current_name = (
                current
                if isinstance(current, str) or current is None
                else f"{current.__module__}.{current.__qualname__}"
            )
            # Named in settings.py or -s, the default beats this: the
            # middleware warns at start (_wiring.check_shared_connections).
            if current_name == _DEFAULT_HANDLER:
                settings["DOWNLOAD_HANDLERS"].set(scheme, HANDLER, "addon")
