"""The package's configuration: every ``STICKY_PROXY_*`` setting, parsed and
validated once per crawler into a frozen :class:`StickyProxyConfig`.

Components never read ``STICKY_PROXY_*`` settings themselves: they ask
:func:`for_crawler`, which parses the crawler's settings the first time and
hands every later caller the same object. ``scrapy sticky_proxy``, which has
no crawler, parses what it needs with :class:`SharedStateConfig`. The addon
calls :func:`check_settings` before any component is built.

A bad value is logged as one ERROR line (the message, which starts with the
setting's name) before it goes up through Scrapy, whose traceback then
starts here, not in the parsing: the first thing the user reads is what to
fix, not what looks like a crash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from ..errors import ConfigError
from .model import StickyProxyConfig
from .proxies import StaticProxy
from .shared import SharedStateConfig

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

__all__ = [
    "SharedStateConfig",
    "StaticProxy",
    "StickyProxyConfig",
    "check_settings",
    "for_crawler",
]

logger = logging.getLogger(__name__)

_parsed: WeakKeyDictionary[Crawler, StickyProxyConfig] = WeakKeyDictionary()


def for_crawler(crawler: Crawler, *, require_proxy: bool = True) -> StickyProxyConfig:
    """The crawler's configuration, parsed on first use (a bad value raises
    :class:`~scrapy_sticky_proxy.errors.ConfigError`, every time it is asked
    for, so each component that needs it stops the crawl the same way).

    *require_proxy* False is for components that route no request (the
    download handlers): an enabled package without STICKY_PROXY_URL or
    STICKY_PROXY_LIST is then left for the middleware to report.

    Kept only once the crawler's settings are frozen: a component built
    before that (an extension) may still see another one change a setting.
    """
    config = _parsed.get(crawler)
    try:
        if config is None:
            config = StickyProxyConfig.from_settings(
                crawler.settings, require_proxy=require_proxy
            )
            if crawler.settings.frozen:
                _parsed[crawler] = config
        elif require_proxy:
            config.check_proxy_given()
    except ConfigError as exc:
        logger.error("%s", exc)
        raise exc.with_traceback(None) from None
    return config


def check_settings(settings: BaseSettings) -> None:
    """Parse *settings* only to stop a crawl whose settings are bad, before
    it starts; the result is not kept (add-ons that run later may still
    change a setting): components parse again, with :func:`for_crawler`."""
    try:
        # A proxy URL may still come from an add-on that runs after ours:
        # a missing one is the middleware's to report.
        StickyProxyConfig.from_settings(settings, require_proxy=False)
    except ConfigError as exc:
        logger.error("%s", exc)
        raise exc.with_traceback(None) from None
