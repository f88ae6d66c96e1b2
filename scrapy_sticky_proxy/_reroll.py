"""Where a re-roll restarts, and whose re-roll bookkeeping a request carries.

A re-roll restarts from the request the spider made: after
``/r/1 -> 302 -> /item/1 -> 403`` it fetches ``/r/1`` again (same method,
body and headers), not ``/item/1``, which may be a captcha page the site
redirected to. The spider's request is remembered, without credentials, in
the trail (``meta[M.TRAIL]``) when a redirect answer passes this middleware:
Scrapy's redirect middlewares run after it, and their copies keep meta.

A meta refresh that Scrapy's MetaRefreshMiddleware will follow counts as a
redirect too (:class:`MetaRefresh`): a site may send a banned exit to its
captcha page that way.

The re-roll bookkeeping (``M.REROLLS``, ``M.REASONS``, ``M.SOFT_RETRIED``,
``M.TOLERATED``, ``M.NOT_BEFORE``, ``M.RENEWED``, ``M.ROUTE_WAITS``)
lives in meta too, so it would also reach a request a spider builds with
``response.follow(url, meta=response.meta)``. The trail says which request
the bookkeeping belongs to: the URL it was last seen on and how many
redirects led there. A request is that one (or a retry copy of it) when its
URL and redirect count match, or a redirect copy of it when it has one
redirect more, from that URL; anything else is a new request, and its
bookkeeping is dropped. The trail moves to each response's URL as the
response passes, so a follow-up built from a redirected response is new too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.http import HtmlResponse
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import get_meta_refresh

from . import _meta as M
from ._numbers import finite

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_REDIRECT_KEYS = ("redirect_urls", "redirect_reasons", "redirect_times", "redirect_ttl")
BOOKKEEPING = (
    M.REROLLS,
    M.REASONS,
    M.SOFT_RETRIED,
    M.TOLERATED,
    M.NOT_BEFORE,
    M.RENEWED,
    M.ROUTE_WAITS,
    M.TRAIL,
)

# (url, method, body, headers, cookies): the spider's request, without
# credentials. Its ``cookies=`` too: Scrapy's redirect copies have none, and
# a re-roll's new session has an empty jar.
Cookies = dict[str, Any] | list[dict[str, Any]]
Origin = tuple[str, str, bytes, dict[bytes, list[bytes]], Cookies]


def number(value: Any, default: float) -> float:
    """A count or duration read from meta (untrusted): >= 0, or *default*."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def _redirects(meta: dict[str, Any]) -> list[Any] | None:
    urls = meta.get("redirect_urls", [])
    return urls if isinstance(urls, list) else None


def _cookie_value(value: object) -> bool:
    return value is None or isinstance(value, (str, bytes, bool)) or finite(value)


def _cookie_dict(value: Any, keys: type | tuple[type, ...]) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, keys) and _cookie_value(v) for k, v in value.items()
    )


def _cookies(value: Any) -> Cookies:
    """A request's ``cookies=`` from meta (untrusted): what Scrapy takes (a
    dict, or a list of dicts with str fields), or none (the rest of the
    request is still the spider's)."""
    if _cookie_dict(value, (str, bytes)) or (
        isinstance(value, list) and all(_cookie_dict(c, str) for c in value)
    ):
        return value
    return {}


def _origin(value: Any) -> Origin | None:
    # A list after a JSON round trip (scrapy-redis with our serializer); an
    # older version's has no cookies.
    if not isinstance(value, (tuple, list)) or len(value) not in (4, 5):
        return None
    cookies = _cookies(value[4]) if len(value) == 5 else {}
    if (
        isinstance(value[0], str)
        and isinstance(value[1], str)
        and isinstance(value[2], bytes)
        and isinstance(value[3], dict)
        and all(
            isinstance(name, bytes)
            and isinstance(values, list)
            and all(isinstance(v, bytes) for v in values)
            for name, values in value[3].items()
        )
    ):
        return (value[0], value[1], value[2], value[3], cookies)
    return None


def snapshot(request: Request) -> Origin:
    headers = {
        key: list(values)
        for key, values in request.headers.items()
        if key.lower() != b"proxy-authorization"
    }
    cookies: Any = request.cookies or {}  # a dict or a list of dicts
    return (request.url, request.method, request.body, headers, cookies)


def _own_trail(request: Request) -> tuple[Origin | None, bool] | None:
    """The spider's request in *request*'s trail (if known), and whether
    *request* is a redirect copy one past it, when the trail is *request*'s
    own; None for another request's."""
    trail = request.meta.get(M.TRAIL)
    urls = _redirects(request.meta)
    if not isinstance(trail, (tuple, list)) or len(trail) != 3 or urls is None:
        return None
    at, hops, origin = trail
    if type(hops) is not int:  # untrusted: not ours
        return None
    if request.url == at and len(urls) == hops:
        return _origin(origin), False
    if len(urls) == hops + 1 and urls[-1] == at:
        return _origin(origin), True
    return None


def bound(request: Request) -> Origin | None:
    """Check that the bookkeeping in *request*'s meta is its own; drop it
    otherwise. Returns the spider's request it belongs to, if known."""
    meta = request.meta
    own = _own_trail(request)
    if own is None:
        for name in BOOKKEEPING:
            meta.pop(name, None)
        return None
    origin, redirected = own
    if redirected:  # the trail moves on to the copy
        meta[M.TRAIL] = (request.url, len(_redirects(meta) or []), origin)
    return origin


class MetaRefresh:
    """Whether Scrapy's MetaRefreshMiddleware will follow a response's
    ``<meta http-equiv="refresh">``: its settings and its checks. Scrapy
    caches the parse per response, so asking first costs it nothing."""

    def __init__(self, settings: BaseSettings):
        self.enabled = settings.getbool("METAREFRESH_ENABLED")
        self._ignore_tags = settings.getlist("METAREFRESH_IGNORE_TAGS")
        self._maxdelay = settings.getint("METAREFRESH_MAXDELAY")

    def follows(self, request: Request, response: Response) -> bool:
        # Cheapest first: this runs for every response that passes.
        if not self.enabled or not isinstance(response, HtmlResponse):
            return False
        # Scrapy parses the first 4,096 characters; looking at as many bytes
        # costs 0.3-4 us, a parse 27 (a tag after multi-byte text is missed).
        body = response.body
        if body.find(b"efresh", 0, 4096) < 0 and body.find(b"EFRESH", 0, 4096) < 0:
            return False
        if request.method == "HEAD" or request.meta.get("dont_redirect"):
            return False
        if urlparse_cached(request).scheme not in ("http", "https"):
            return False
        interval, url = get_meta_refresh(response, ignore_tags=self._ignore_tags)
        if url is None or interval is None or interval >= self._maxdelay:
            return False
        return url.partition(":")[0].lower() in ("http", "https")


class Redirects:
    """Whether Scrapy's redirect middlewares will follow a response (a 3xx
    or a meta refresh): their settings and their checks."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.enabled = crawler.settings.getbool("REDIRECT_ENABLED")
        self.refresh = MetaRefresh(crawler.settings)

    def follow(self, request: Request, response: Response) -> bool:
        status = response.status
        if status not in REDIRECT_STATUSES or b"Location" not in response.headers:
            return self.refresh.follows(request, response)
        meta = request.meta
        if not self.enabled or meta.get("dont_redirect"):
            return False
        scheme, colon, _ = (response.headers.get(b"Location") or b"").partition(b":")
        if colon and b"/" not in scheme and scheme.lower() not in (b"http", b"https"):
            return False  # Scrapy hands it to the spider
        if meta.get("handle_httpstatus_all"):
            return False
        mine = meta.get("handle_httpstatus_list", ())
        spiders = getattr(self.crawler.spider, "handle_httpstatus_list", ())
        try:
            return status not in mine and status not in spiders
        except TypeError:  # meta: untrusted; Scrapy's own check fails too
            return False


def passed(request: Request, response: Response, redirects: Redirects) -> bool:
    """A response goes on to the spider or to a redirect: move the trail to
    it, and remember the spider's request before a redirect. True for a
    redirect (its copy keeps the request's meta)."""
    meta = request.meta
    redirect = redirects.follow(request, response)
    if M.TRAIL not in meta and not redirect:
        return False
    origin = bound(request)
    urls = _redirects(meta) or []
    if redirect and origin is None:
        origin = snapshot(request)
    meta[M.TRAIL] = (request.url, len(urls), origin)
    return redirect


def restart(request: Request) -> Request:
    """The request a re-roll starts from, and a record names: the spider's
    own, if *request* is it or a redirect of it (its trail's; a request a
    spider built from ``response.meta`` is its own, not that one)."""
    own = _own_trail(request)
    origin = None if own is None else own[0]
    if origin is None or (request.url, request.method) == origin[:2]:
        return request
    url, method, body, headers, cookies = origin
    try:
        new = request.replace(
            url=url, method=method, body=body, headers=headers, cookies=cookies
        )
    except (TypeError, ValueError):  # untrusted: not a request to go back to
        return request
    for name in _REDIRECT_KEYS:
        new.meta.pop(name, None)
    return new


def stamp(request: Request) -> None:
    """Mark the bookkeeping on *request* (a copy we made, its trail checked
    by :func:`bound`) as its own. The spider's request in the trail stays:
    a same-session retry of a redirect target is still that request's, and
    a re-roll after it starts from the spider's request, not the target."""
    meta = request.meta
    trail = meta.get(M.TRAIL)
    kept = trail[2] if isinstance(trail, (tuple, list)) and len(trail) == 3 else None
    urls = _redirects(meta) or []
    meta[M.TRAIL] = (request.url, len(urls), _origin(kept) or snapshot(request))
