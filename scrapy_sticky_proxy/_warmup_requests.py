"""What a warm-up sends: the requests the STICKY_PROXY_WARMUP callable
returned, checked, and each one prepared to go through the session it warms
(:mod:`._warmup` decides when) and sent with a deadline; and which requests
are robots.txt's.

A warm-up request goes through every downloader middleware, RobotsTxtMiddleware
included, which holds it until the site's robots.txt is read: a robots.txt
request must never wait for a warm-up that waits for it. So, with a warm-up,
a robots.txt request has a session of its own (its URL is its key, whatever
STICKY_PROXY_KEY or the pool says), and a warm-up obeys robots.txt as the
request it warms for does: the warm-up of a robots.txt request does not wait
for robots.txt."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from . import _meta as M
from .config.readers import shown
from .cookies import our_jar
from .routing.warmup import WarmupMarker

if TYPE_CHECKING:
    from scrapy.core.engine import ExecutionEngine
    from scrapy.http import Response


class WrongReturn(TypeError):
    """The warm-up callable returned something else than requests."""


def requests_of(value: Any) -> list[Request]:
    """What the warm-up callable returned, as a list of requests."""
    if value is None:
        return []
    if isinstance(value, Request):
        return [value]
    what = f"{shown(value)} (a {type(value).__name__})"
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict)):
        requests = list(value)
        wrong = [r for r in requests if not isinstance(r, Request)]
        if not wrong:
            return requests
        what = f"a {type(value).__name__} holding {shown(wrong[0])}"
    raise WrongReturn(f"returned {what}, not a Request, a list of them or None")


class Late(Exception):
    """The warm-up took longer than STICKY_PROXY_WARMUP_TIMEOUT."""


async def download(
    engine: ExecutionEngine,
    request: Request,
    deadline: float,
    clock: Callable[[], float],
) -> Response:
    """*request* through the downloader; :class:`Late` past *deadline*
    (the download itself goes on, bounded by its own timeouts)."""
    seconds = deadline - clock()
    if seconds <= 0:
        raise Late
    done = deferred_from_coro(engine.download_async(request))
    ended: Deferred[list[Any]] = Deferred()

    def settle(result: Any) -> None:
        if not ended.called:
            ended.callback([result])

    done.addBoth(settle)  # also consumes a late failure
    timer = call_later(seconds, settle, Late)
    try:
        (result,) = await maybe_deferred_to_future(ended)
    finally:
        timer.cancel()
    if isinstance(result, Failure):
        result.raiseException()
    if result is Late:
        raise Late
    return result


def robots_txt(request: Request) -> bool:
    """A robots.txt request of RobotsTxtMiddleware, marked as it marks them
    (its redirects and our re-rolls keep both marks)."""
    return bool(request.meta.get("dont_obey_robotstxt")) and (
        request.callback is NO_CALLBACK
    )


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
    if meta.get("dont_obey_robotstxt"):  # as the request it warms for
        own.setdefault("dont_obey_robotstxt", True)
    if probe is not None:
        own[M.PROBE] = probe
    return request.replace(meta=own, dont_filter=True)
