"""scrapy-sticky-proxy: one sticky exit IP per key, bans re-rolled, health shared.

The public API is what this module exports. The Scrapy components are
loaded on first use, so the routing core (``scrapy_sticky_proxy.routing``)
and the stores (``scrapy_sticky_proxy.state``) import without Scrapy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .addon import Addon
    from .bans import BanPolicy
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

_HOMES = {
    "Addon": "addon",
    "BanPolicy": "bans",
    "StickyProxyDownloadHandler": "handler",
    "StickyProxyInheritMiddleware": "inherit",
    "StickyProxyMiddleware": "middleware",
    "StickyProxyStats": "extension",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
