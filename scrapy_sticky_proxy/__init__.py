"""scrapy-sticky-proxy: one sticky exit IP per key, bans re-rolled, health shared."""

from __future__ import annotations

from .addon import Addon
from .bans import BanPolicy
from .errors import ConfigError
from .extension import StickyProxyStats
from .handler import StickyProxyDownloadHandler
from .inherit import StickyProxyInheritMiddleware
from .middleware import StickyProxyMiddleware

__all__ = [
    "Addon",
    "BanPolicy",
    "ConfigError",
    "StickyProxyDownloadHandler",
    "StickyProxyInheritMiddleware",
    "StickyProxyMiddleware",
    "StickyProxyStats",
]
__version__ = "0.1.0"
