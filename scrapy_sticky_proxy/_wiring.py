"""Is the package wired into Scrapy as it must be? Checked once at start.

* The downloader middlewares' order: StickyProxyMiddleware before
  HttpProxyMiddleware (and before CookiesMiddleware with cookies per
  session), StickyProxyAuth after everything that may store a request,
  StickyProxyLedger present (:func:`check_middleware_order`).
* No silent bypass: which download handlers send a routed request through
  its proxy (:func:`check_handlers`, :class:`Bypass`).
* No silent mixing: a handler that may send requests of different sessions
  over one proxy connection is reported (:func:`check_shared_connections`).

A download handler that ignores ``meta["proxy"]`` sends a routed request
straight to the target, from the user's own IP, while our stats count it as
routed. scrapy-playwright's handler does that for every request with
``meta["playwright"]`` (its proxies are per browser context). So, at start:

* handlers of ours (``sticky_proxy_aware = True``), Scrapy's HTTP/1.1 handler
  and scrapy-impersonate's honour ``meta["proxy"]``;
* scrapy-playwright's own handler sends ``meta["playwright"]`` requests
  direct: the crawl does not start unless it is listed in
  ``STICKY_PROXY_ALLOW_HANDLERS``, and then those requests are left alone
  (not routed, counted in ``sticky_proxy/unproxied``, one warning);
* any other handler may ignore the proxy: the crawl does not start unless
  it is listed in ``STICKY_PROXY_ALLOW_HANDLERS`` (you vouch for it).

At run time, :class:`~scrapy_sticky_proxy.auth.StickyProxyAuth` compares the
address a response came from (``response.ip_address``) with the proxy's,
for proxies given by IP address: a routed response from elsewhere went
direct, and is counted in ``sticky_proxy/unproxied`` with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object

from .config.readers import dotted_path
from .errors import ConfigError
from .inherit import check_enabled

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    from .config import StickyProxyConfig

logger = logging.getLogger(__name__)

SETTING = "STICKY_PROXY_ALLOW_HANDLERS"
HONOUR = frozenset(
    {
        "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler",
        "scrapy_impersonate.handler.ImpersonateDownloadHandler",
        "scrapy_impersonate.ImpersonateDownloadHandler",
    }
)
# Handlers that honour meta["proxy"] except for requests with this meta key.
BYPASS_BY_META = {
    "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler": "playwright",
}


def check_handlers(settings: BaseSettings, allowed: Collection[str]) -> dict[str, str]:
    """Check the http and https download handlers. Returns, per scheme, the
    meta key whose truthy value makes its (allowed) handler bypass the
    proxy; raises ConfigError for a handler that may ignore the proxy.
    *allowed*: the config's ``allow_handlers``."""
    handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
    bypass: dict[str, str] = {}
    for scheme in ("http", "https"):
        handler = handlers.get(scheme)
        if handler is None:
            continue
        path = dotted_path(handler)
        if path in HONOUR or aware(handler):
            continue
        meta_key = BYPASS_BY_META.get(path)
        if path not in allowed:
            if meta_key is not None:
                problem = (
                    f"requests with meta[{meta_key!r}] would go straight to "
                    "the target, not through the proxy: use "
                    "scrapy_sticky_proxy.playwright's handler (see the docs, "
                    "docs/topics/browsers.md)"
                )
            else:
                problem = "it is not known to send requests through meta['proxy']"
            raise ConfigError(
                "DOWNLOAD_HANDLERS",
                f"{scheme}: {path}: {problem}. If you accept that, list it "
                f"in {SETTING}",
            )
        if meta_key is not None:
            bypass[scheme] = meta_key
    return bypass


# Handlers that send (some) requests through Scrapy's HTTP/1.1 connection
# pool, which pools plain-http proxy connections by proxy host:port, whatever
# the credential, and keys https tunnels by the credential; and ours, which
# keeps them apart.
STOCK_POOL = HONOUR | BYPASS_BY_META.keys()
OURS = {
    "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler": (
        "scrapy_sticky_proxy.StickyProxyDownloadHandler"
    ),
    "scrapy_impersonate.handler.ImpersonateDownloadHandler": (
        "scrapy_sticky_proxy.impersonate.StickyImpersonateDownloadHandler"
    ),
    "scrapy_impersonate.ImpersonateDownloadHandler": (
        "scrapy_sticky_proxy.impersonate.StickyImpersonateDownloadHandler"
    ),
    "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler": (
        "scrapy_sticky_proxy.playwright.StickyPlaywrightDownloadHandler"
    ),
}
SHARED_OK = "STICKY_PROXY_ALLOW_SHARED_CONNECTIONS"


def check_shared_connections(settings: BaseSettings, accepted: bool) -> None:
    """One warning if the http or https handler may send requests of
    different sessions over one proxy connection, which a gateway that pins
    the exit per connection turns into one exit for them all. The addon's
    handler is beaten by one named in settings.py or -s, so this checks the
    handlers in effect. *accepted*: the config's ``allow_shared_connections``."""
    if accepted:
        return
    handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
    shared = []
    for scheme in ("http", "https"):
        handler = handlers.get(scheme)
        if handler is None or aware(handler):
            continue
        path = dotted_path(handler)
        if scheme == "https" and path in STOCK_POOL:
            continue  # CONNECT tunnels are keyed by the credential
        use = OURS.get(path)
        shared.append(f"{scheme}: {path}" + (f" (use {use})" if use else ""))
    if shared:
        https = shared[-1].startswith("https:")
        logger.warning(
            "DOWNLOAD_HANDLERS: %s: %s of different sessions may share a "
            "connection to the proxy, so a gateway that pins the "
            "exit per connection sends them out through one exit (see the "
            "docs, docs/topics/connection-pinning.md). The addon installs its handler "
            "only where settings.py or -s name none. If your gateway picks "
            "the exit per request, set %s = True",
            "; ".join(shared),
            "requests" if https else "plain-http requests",
            SHARED_OK,
        )


def aware(handler: Any) -> bool:
    """Whether *handler* (a class or its path) is one of ours."""
    try:
        cls = load_object(handler) if isinstance(handler, str) else handler
    except (ImportError, AttributeError, ValueError, NameError):
        return False
    return bool(getattr(cls, "sticky_proxy_aware", False))


def middleware_names(settings: BaseSettings) -> list[str]:
    """The enabled downloader middlewares' dotted paths, in order."""
    order = build_component_list(settings.getwithbase("DOWNLOADER_MIDDLEWARES"))
    return [dotted_path(p) for p in order]


_HTTPPROXY = "scrapy.downloadermiddlewares.httpproxy.HttpProxyMiddleware"
_HTTPCACHE = "scrapy.downloadermiddlewares.httpcache.HttpCacheMiddleware"
_AUTH = "scrapy_sticky_proxy.auth.StickyProxyAuth"
_LEDGER = "scrapy_sticky_proxy.ledger.StickyProxyLedger"
_COOKIES = "scrapy.downloadermiddlewares.cookies.CookiesMiddleware"
_SHARE = "scrapy_sticky_proxy.cookies.StickyProxyCookieShare"


def check_wiring(settings: BaseSettings, config: StickyProxyConfig) -> None:
    """The order below, and the spider middleware STICKY_PROXY_INHERIT_KEY needs."""
    check_middleware_order(settings, config.cookie_jars, config.share_cookies)
    if config.inherit_key:
        check_enabled(settings)


def check_middleware_order(
    settings: BaseSettings, cookie_jars: bool = False, share_cookies: bool = False
) -> None:
    """StickyProxyMiddleware before HttpProxyMiddleware (which would
    otherwise fill meta["proxy"] from the environment first), and
    StickyProxyAuth, which adds the credential, after everything that may
    store a request (the HTTP cache). With *cookie_jars* (cookies per
    session), StickyProxyMiddleware before CookiesMiddleware, which builds
    the Cookie header from the jar it names; with *share_cookies*,
    StickyProxyCookieShare between the two."""
    ours = "scrapy_sticky_proxy.middleware.StickyProxyMiddleware"
    names = [
        ours if n == "scrapy_sticky_proxy.StickyProxyMiddleware" else n
        for n in middleware_names(settings)
    ]
    if _after(names, ours, _HTTPPROXY):
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            "StickyProxyMiddleware must have a lower priority number than "
            "HttpProxyMiddleware (750); use 690 or the addon",
        )
    if _AUTH not in names:
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            f"{_AUTH} is missing: it adds the proxy credential just before a "
            "request is sent (999, or use the addon)",
        )
    if _LEDGER not in names:
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            f"{_LEDGER} is missing: it sees how each request ends, so that "
            "none is lost unrecorded (10, or use the addon)",
        )
    if cookie_jars:
        _check_cookies(settings, names, ours, share_cookies)
    last = max((names.index(n) for n in (_HTTPCACHE, ours) if n in names), default=-1)
    if names.index(_AUTH) < last:
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            f"{_AUTH} must come after StickyProxyMiddleware and the HTTP cache "
            "(a higher priority number, 999), or the cache would store the "
            "credential",
        )


def _check_cookies(
    settings: BaseSettings, names: list[str], ours: str, share: bool
) -> None:
    # The priorities actually set (CookiesMiddleware may have been moved
    # from Scrapy's 700): the message names them and a number that works.
    given = settings.getwithbase("DOWNLOADER_MIDDLEWARES").items()
    order = {dotted_path(path): priority for path, priority in given}
    cookies = order.get(_COOKIES) or 700
    mine = order.get(ours) or order.get("scrapy_sticky_proxy.StickyProxyMiddleware")
    place = "690 or the addon" if cookies > 690 else f"a number below {cookies}"
    if _after(names, ours, _COOKIES):
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            "StickyProxyMiddleware must have a lower priority number than "
            f"CookiesMiddleware ({cookies}), which picks each session's cookie "
            f"jar: use {place}, or set STICKY_PROXY_COOKIES_PER_SESSION = False "
            "(COOKIES_ENABLED = False: no cookies at all)",
        )
    if not share:
        return
    between = "695, or use the addon"
    if mine is not None and (mine, cookies) != (690, 700):
        between = f"a number between {mine} and {cookies}"
    if _SHARE not in names:
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            f"{_SHARE} is missing: STICKY_PROXY_SHARE_COOKIES needs it ({between})",
        )
    if _after(names, ours, _SHARE) or _after(names, _SHARE, _COOKIES):
        raise ConfigError(
            "DOWNLOADER_MIDDLEWARES",
            f"{_SHARE} must come after StickyProxyMiddleware and before "
            f"CookiesMiddleware ({cookies}): {between}",
        )


def _after(names: list[str], first: str, second: str) -> bool:
    """Whether *first* comes after *second*, both being installed."""
    return (
        first in names and second in names and names.index(first) > names.index(second)
    )
