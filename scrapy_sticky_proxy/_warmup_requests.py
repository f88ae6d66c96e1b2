"""What a warm-up sends: the requests the STICKY_PROXY_WARMUP callable
returned, checked, and each one prepared to go through the session it warms
(:mod:`._warmup` decides when)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scrapy import Request

from . import _meta as M
from .cookies import our_jar
from .routing.warmup import WarmupMarker


def requests_of(value: Any) -> list[Request]:
    """What the warm-up callable returned, as a list of requests."""
    if value is None:
        return []
    if isinstance(value, Request):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict)):
        requests = list(value)
        if all(isinstance(r, Request) for r in requests):
            return requests
    raise TypeError(f"expected a Request, Requests or None, got {type(value)}")


def prepared(
    request: Request, meta: dict[str, Any], marker: WarmupMarker, probe: Any
) -> Request:
    """*request* as a warm-up of *marker* for the request of *meta*: routed
    through that session (and its cookie jar, or the request's own jar),
    never filtered, never from or into the cache."""
    own = {
        name: value
        for name, value in request.meta.items()
        if not name.startswith("_sticky_proxy_")
        and name not in ("proxy", "cookiejar", M.DONT)
    }
    if "cookiejar" in meta and our_jar(meta) is None:  # the user's jar: share it
        own["cookiejar"] = meta["cookiejar"]
    own[M.KEY] = meta[M.KEY]
    own[M.COUNTRY] = meta.get(M.COUNTRY) or ""
    own[M.WARMUP] = marker
    own["dont_cache"] = True
    if probe is not None:
        own[M.PROBE] = probe
    return request.replace(meta=own, dont_filter=True)
