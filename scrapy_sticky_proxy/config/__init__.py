"""The package's configuration: every ``STICKY_PROXY_*`` setting, parsed and
validated once per crawler into a frozen :class:`StickyProxyConfig`.

Components never read ``STICKY_PROXY_*`` settings themselves: they ask
:func:`for_crawler`, which parses the crawler's settings the first time and
hands every later caller the same object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from .model import StaticProxy, StickyProxyConfig

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["StaticProxy", "StickyProxyConfig", "for_crawler"]

_parsed: WeakKeyDictionary[Crawler, StickyProxyConfig] = WeakKeyDictionary()


def for_crawler(crawler: Crawler) -> StickyProxyConfig:
    """The crawler's configuration, parsed on first use (a bad value raises
    :class:`~scrapy_sticky_proxy.errors.ConfigError`, every time it is asked
    for, so each component that needs it stops the crawl the same way)."""
    config = _parsed.get(crawler)
    if config is None:
        config = _parsed[crawler] = StickyProxyConfig.from_settings(crawler.settings)
    return config
