"""The proxy credential lives on a request only while it is being sent.

Scrapy keeps proxy credentials on the Request (``meta["proxy"]``, then the
``Proxy-Authorization`` header HttpProxyMiddleware moves them into), and
everything that stores requests stores them: the HTTP cache, JOBDIR,
scrapy-redis's queue, the copies RetryMiddleware and RedirectMiddleware
make. So a request routed by :class:`~scrapy_sticky_proxy.StickyProxyMiddleware`
carries only non-secret references: ``meta["proxy"] = "http://host:port"``,
the route (``host:port`` or a static proxy's id) and the session id.

:class:`StickyProxyAuth` is the last downloader middleware before the
download handler (priority 999, after the HTTP cache at 900): it adds
``Proxy-Authorization`` for the request's session just before the bytes are
sent, and takes it off again first thing on the way back, before any other
middleware sees the response or the error. The download handler (Scrapy's
HTTP/1.1, ours, or any that honours ``meta["proxy"]`` and the header) is the
only code that sees it.

A request whose ``meta["proxy"]`` is not its route's endpoint (changed by
another middleware, or a crafted queue entry) gets no credential.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest

from . import _meta as M
from .ledger import sticky_middleware
from .routing.location import LocationError

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from .routing.template import ProxyTemplate

logger = logging.getLogger(__name__)

AUTH_MIDDLEWARE = "scrapy_sticky_proxy.auth.StickyProxyAuth"
AUTH_PRIORITY = 999
_HEADER = b"Proxy-Authorization"
# The header quoted in a message, its value perhaps cut short.
_QUOTED = re.compile(r"(?i)(proxy-authorization:\s*\w+\s+)[A-Za-z0-9+/=]+")


class StickyProxyAuth:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.encoding = crawler.settings.get("HTTPPROXY_AUTH_ENCODING") or "latin-1"
        self._owner: Any = None
        self._warned = False
        self._warned_direct = False
        self._templates: dict[str, ProxyTemplate] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StickyProxyAuth:
        return cls(crawler)

    def _routes(self) -> Any:
        if self._owner is None:
            self._owner = sticky_middleware(self.crawler)
        return None if self._owner is None else self._owner.router

    def _template(self, route: str) -> ProxyTemplate | None:
        """The template of *route*, if it is one of ours: looked up once per
        route (a fixed set), so a request costs one dict read here."""
        routes = self._routes()
        if routes is None or not routes.knows(route):
            return None  # not kept: a crafted route would grow the dict
        template = self._templates[route] = routes.template(route)
        return template

    def process_request(self, request: Request) -> None:
        meta = request.meta
        route = meta.get(M.ROUTE)
        if route is None or meta.get(M.DONT):
            return
        session = meta.get(M.SESSION)
        if not isinstance(session, str) or not isinstance(route, str):
            return
        template = self._templates.get(route) or self._template(route)
        if template is None:
            return
        if meta.get("proxy") != template.endpoint:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "A request routed through %s was sent to another proxy "
                    "(meta['proxy'] changed after StickyProxyMiddleware): it "
                    "goes without credentials",
                    route,
                )
            return
        country = meta.get(M.COUNTRY) or None  # checked by the middleware
        try:
            header = template.authorization(session, self.encoding, country)
        except LocationError as exc:  # meta changed since: never a wrong place
            raise IgnoreRequest(str(exc)) from None
        if header is not None:
            request.headers[_HEADER] = header

    def process_response(self, request: Request, response: Response) -> Response:
        meta = request.meta
        if M.ROUTE in meta:
            request.headers.pop(_HEADER, None)
            if getattr(response, "ip_address", None) is not None:
                self._check_proxied(meta[M.ROUTE], response)
        return response

    def _check_proxied(self, route: Any, response: Response) -> None:
        """A response from another address than the proxy's (given as an
        IP address) went straight to the target: say so."""
        came_from = getattr(response, "ip_address", None)
        routes = self._routes()
        if came_from is None or routes is None or not routes.knows(route):
            return
        proxy_ip = routes.proxy_ip(route)
        if proxy_ip is None or came_from == proxy_ip:
            return
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("sticky_proxy/unproxied")
        if not self._warned_direct:
            self._warned_direct = True
            logger.warning(
                "A response routed through %s came from %s instead: the "
                "download handler sent it straight to the target "
                "(sticky_proxy/unproxied)",
                route,
                came_from,
            )

    def process_exception(self, request: Request, exception: Exception) -> None:
        if M.ROUTE in request.meta:
            for header in request.headers.pop(_HEADER, None) or ():
                if credential := header.split(b" ")[-1]:
                    _scrub(exception, credential)


def _scrub(exception: BaseException | None, credential: bytes) -> None:
    """Take *credential* (the header's base64 value) out of the messages of
    *exception* and its causes: a proxy whose answer to CONNECT is not HTTP
    makes Scrapy's TunnelError quote that answer, which may be the CONNECT
    request itself, header included; the error is logged after us."""
    text = credential.decode("latin-1")
    for _ in range(8):  # a cause's cause, not an endless chain
        if exception is None:
            return
        exception.args = tuple(
            _QUOTED.sub(r"\1***", arg.replace(text, "***"))
            if isinstance(arg, str)
            else arg.replace(credential, b"***")
            if isinstance(arg, bytes)
            else arg
            for arg in exception.args
        )
        exception = exception.__cause__ or exception.__context__
