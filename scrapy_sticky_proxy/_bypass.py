"""Requests a download handler we allow sends straight to the target,
past the proxy (scrapy-playwright's ``meta["playwright"]``): which they
are is :func:`._wiring.check_handlers`'s finding; this leaves them alone."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.utils.httpobj import urlparse_cached

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request

logger = logging.getLogger("scrapy_sticky_proxy._wiring")  # where it was born


class Bypass:
    """Requests an allowed handler is known to send straight to the target
    (scrapy-playwright's ``meta["playwright"]``): they are left alone,
    counted, never reported as routed."""

    def __init__(self, by_scheme: dict[str, str], count: Callable[[str], None]):
        self.by_scheme = by_scheme  # scheme -> meta key
        self._count = count
        self._warned = False

    def __bool__(self) -> bool:
        return bool(self.by_scheme)

    def goes_direct(self, request: Request) -> bool:
        meta_key = self.by_scheme.get(urlparse_cached(request).scheme)
        if meta_key is None or not request.meta.get(meta_key):
            return False
        self._count("unproxied")
        if not self._warned:
            self._warned = True
            logger.warning(
                "Requests with meta[%r] go straight to the target, not through "
                "the proxy (the download handler ignores meta['proxy']): they "
                "are not routed (sticky_proxy/unproxied)",
                meta_key,
            )
        return True
