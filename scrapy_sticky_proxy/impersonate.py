"""scrapy-impersonate (curl_cffi) with sticky sessions, either way.

scrapy-impersonate's ``ImpersonateDownloadHandler`` sends a request with
``meta["impersonate"]`` through curl_cffi, on a fresh connection each time,
and every other request through Scrapy's stock HTTP/1.1 handler, whose pool
shares plain-http proxy connections between sessions: on a gateway that
pins the exit per connection, an item's follow-ups left through other
items' exits.

:class:`StickyImpersonateDownloadHandler` is our session-keyed handler
(:class:`~scrapy_sticky_proxy.StickyProxyDownloadHandler`) for the requests
without ``meta["impersonate"]``, and hands the others to scrapy-impersonate's
handler, unchanged. The credential needs nothing new: scrapy-impersonate
takes the ``Proxy-Authorization`` header that
:class:`~scrapy_sticky_proxy.auth.StickyProxyAuth` puts on the request for
the duration of the download, off a copy of the request, and gives it to
curl as ``CURLOPT_PROXYHEADER``: curl sends it in the CONNECT of an https
target (never inside the tunnel) and, for a plain-http target, in the
request to the proxy, which strips it like any proxy header. The password
is never in ``meta["proxy"]``.

Two more things make a curl download behave like a Scrapy one for the rest
of the stack (retries, our ban policy, outage handling, the 407 check):

* curl waits ``meta["download_timeout"]`` (DOWNLOAD_TIMEOUT), not
  curl_cffi's own 30 s: the value is put in ``meta["impersonate_args"]``
  for the duration of the download only;
* curl's errors are raised as the exceptions Scrapy's handler raises for
  the same failure (:func:`scrapy_error`), the curl error chained.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import exceptions
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object
from twisted.internet import error as tx

from .handler import StickyProxyDownloadHandler

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

IMPERSONATE_HANDLER = "scrapy_impersonate.ImpersonateDownloadHandler"
_DEFAULT_TIMEOUT = 180.0  # Scrapy's DOWNLOAD_TIMEOUT default
_TUNNEL_STATUS = re.compile(r"CONNECT tunnel failed, response (\d{3})")


def _scrapy(name: str, older: type[Exception]) -> type[Exception]:
    # Scrapy's own download exceptions are recent: Twisted's before them.
    found = getattr(exceptions, name, None)
    return found if isinstance(found, type) else older


_FAILED = _scrapy("DownloadFailedError", tx.ConnectionLost)
_UNRESOLVED = _scrapy("CannotResolveHostError", tx.DNSLookupError)
# libcurl error codes (a stable ABI) -> what Scrapy's handler raises.
_CURL_ERRORS: dict[int, type[Exception]] = {
    5: _UNRESOLVED,  # COULDNT_RESOLVE_PROXY
    6: _UNRESOLVED,  # COULDNT_RESOLVE_HOST
    7: _scrapy(  # COULDNT_CONNECT
        "DownloadConnectionRefusedError", tx.ConnectionRefusedError
    ),
    18: _scrapy("ResponseDataLossError", tx.ConnectionLost),  # PARTIAL_FILE
    28: _scrapy("DownloadTimeoutError", tx.TimeoutError),  # OPERATION_TIMEDOUT
    52: _FAILED,  # GOT_NOTHING
    55: _FAILED,  # SEND_ERROR
    56: _FAILED,  # RECV_ERROR
}


class StickyImpersonateDownloadHandler(StickyProxyDownloadHandler):
    """Our session-keyed HTTP/1.1 handler, with scrapy-impersonate's for the
    requests that ask for it (``meta["impersonate"]``)."""

    def __init__(self, crawler: Crawler):
        # By path, as Scrapy loads DOWNLOAD_HANDLERS: an optional dependency
        # the user installs with scrapy-impersonate.
        try:
            curl_handler = load_object(IMPERSONATE_HANDLER)
        except ImportError as exc:
            raise NotConfigured(
                f"StickyImpersonateDownloadHandler needs scrapy-impersonate: {exc}"
            ) from exc
        super().__init__(crawler)
        self._curl = curl_handler(crawler)
        self._timeout = positive(
            crawler.settings.getfloat("DOWNLOAD_TIMEOUT"), _DEFAULT_TIMEOUT
        )

    async def download_request(self, request: Request) -> Response:
        meta = request.meta
        if not meta.get("impersonate"):
            return await super().download_request(request)
        args = meta.get("impersonate_args")
        if args is not None and not isinstance(args, dict):
            return await self._curl.download_request(request)  # theirs to refuse
        timeout = positive(meta.get("download_timeout"), self._timeout)
        meta["impersonate_args"] = {**(args or {}), "timeout": timeout}
        try:
            return await self._curl.download_request(request)
        except Exception as exc:
            error = scrapy_error(exc, meta.get("proxy"))
            if error is None:
                raise
            raise error from exc
        finally:
            if args is None:
                meta.pop("impersonate_args", None)
            else:
                meta["impersonate_args"] = args

    async def close(self) -> None:
        try:
            await self._curl.close()
        finally:
            await super().close()


def positive(value: Any, default: float) -> float:
    """A duration read from meta or settings (untrusted): curl takes 0 as
    "no limit" and cannot take infinity, so only a finite one > 0."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and 0 < value < math.inf else default


def scrapy_error(exc: Exception, proxy: Any) -> Exception | None:
    """The exception Scrapy's HTTP/1.1 handler raises for the failure curl
    reported as *exc* (a curl_cffi error, told by its ``code``), or None to
    let *exc* through. A CONNECT the proxy answered with an error status is
    a TunnelError worded as Scrapy's, so the 407 check reads it."""
    code = getattr(exc, "code", None)
    if not isinstance(code, int) or "curl" not in type(exc).__module__:
        return None
    tunnel = _TUNNEL_STATUS.search(str(exc))
    if tunnel:
        where = _hostport(proxy)
        status = int(tunnel.group(1))
        return TunnelError(
            f"Could not open CONNECT tunnel with proxy {where} "
            f"[{{'status': {status}, 'reason': ''}}]"
        )
    cls = _CURL_ERRORS.get(code)
    return None if cls is None else cls(str(exc))


def _hostport(proxy: Any) -> str:
    """host:port of a proxy URL, never its userinfo."""
    try:
        parts = urlsplit(proxy) if isinstance(proxy, str) else None
        return f"{parts.hostname}:{parts.port}" if parts else "?"
    except ValueError:  # a port out of range
        return "?"
