"""No silent bypass: which download handlers send a routed request through
its proxy.

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

from typing import TYPE_CHECKING, Any

from scrapy.utils.misc import load_object

from .errors import ConfigError
from .readers import read_list

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

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


def _path(handler: Any) -> str:
    if isinstance(handler, str):
        return handler
    return f"{handler.__module__}.{handler.__qualname__}"


def check_handlers(settings: BaseSettings) -> dict[str, str]:
    """Check the http and https download handlers. Returns, per scheme, the
    meta key whose truthy value makes its (allowed) handler bypass the
    proxy; raises ConfigError for a handler that may ignore the proxy."""
    allowed = {_path(h) for h in read_list(settings, SETTING)}
    handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
    bypass: dict[str, str] = {}
    for scheme in ("http", "https"):
        handler = handlers.get(scheme)
        if handler is None:
            continue
        path = _path(handler)
        if path in HONOUR or aware(handler):
            continue
        meta_key = BYPASS_BY_META.get(path)
        if path not in allowed:
            if meta_key is not None:
                problem = (
                    f"requests with meta[{meta_key!r}] would go straight to "
                    "the target, not through the proxy: use "
                    "scrapy_sticky_proxy.playwright's handler (see the README, "
                    "'Browsers and impersonation')"
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


def aware(handler: Any) -> bool:
    """Whether *handler* (a class or its path) is one of ours."""
    try:
        cls = load_object(handler) if isinstance(handler, str) else handler
    except (ImportError, AttributeError, ValueError, NameError):
        return False
    return bool(getattr(cls, "sticky_proxy_aware", False))
