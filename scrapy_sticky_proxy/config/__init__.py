"""The package's configuration: every ``STICKY_PROXY_*`` setting, parsed and
validated once per crawler into a frozen :class:`StickyProxyConfig`."""

from __future__ import annotations

from .model import StaticProxy, StickyProxyConfig

__all__ = ["StaticProxy", "StickyProxyConfig"]
