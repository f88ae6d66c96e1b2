"""Spider middleware: follow-up requests inherit their parent's session key.

Enabled by ``STICKY_PROXY_INHERIT_KEY = True``. A request yielded from a
callback that has no ``sticky_proxy_key`` of its own gets the key of the
response it came from, so a page's API calls, media and thumbnails leave
through the page's exit without the spider passing the key by hand. Leave it
off when a listing page links to items that each deserve their own exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.exceptions import NotConfigured
from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object

from . import _meta as M
from .config import for_crawler
from .errors import ConfigError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings


def check_enabled(settings: BaseSettings) -> None:
    """STICKY_PROXY_INHERIT_KEY on, this middleware (or a subclass) in
    SPIDER_MIDDLEWARES: wired by hand, it was easy to leave out, and
    nothing was inherited."""
    order = build_component_list(settings.getwithbase("SPIDER_MIDDLEWARES"))
    if not any(_is_this(path) for path in order):
        raise ConfigError(
            "STICKY_PROXY_INHERIT_KEY",
            "needs SPIDER_MIDDLEWARES = {'scrapy_sticky_proxy."
            "StickyProxyInheritMiddleware': 600} (or the addon)",
        )


def _is_this(path: Any) -> bool:
    try:
        cls = load_object(path) if isinstance(path, str) else path
    except (ImportError, AttributeError, ValueError, NameError):
        return False  # Scrapy reports it when it loads the middlewares
    return isinstance(cls, type) and issubclass(cls, StickyProxyInheritMiddleware)


class StickyProxyInheritMiddleware:
    """Spider middleware: a request a callback yields without a
    ``sticky_proxy_key`` gets the key (and the country) of the response it
    came from, so it leaves through the same session.

    On with ``STICKY_PROXY_INHERIT_KEY = True`` (``NotConfigured``
    otherwise); the addon installs it. A request with
    ``dont_sticky_proxy`` is left alone.
    """

    def __init__(self, crawler: Crawler):
        config = for_crawler(crawler)
        if not (config.enabled and config.inherit_key):
            raise NotConfigured

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyInheritMiddleware:
        return cls(crawler)

    @staticmethod
    def _inherit(response: Response, result: Any) -> Any:
        if isinstance(result, Request) and M.KEY not in result.meta:
            key = response.meta.get(M.KEY)
            if key is not None and not result.meta.get(M.DONT):
                result.meta[M.KEY] = key
                # The key's session is the key in its country.
                country = response.meta.get(M.COUNTRY)
                if country is not None:
                    result.meta.setdefault(M.COUNTRY, country)
        return result

    def process_spider_output(
        self, response: Response, result: Iterable[Any]
    ) -> Iterable[Any]:
        for item in result:
            yield self._inherit(response, item)

    async def process_spider_output_async(
        self, response: Response, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        async for item in result:
            yield self._inherit(response, item)
