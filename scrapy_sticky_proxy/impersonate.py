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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object

from .handler import StickyProxyDownloadHandler

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

IMPERSONATE_HANDLER = "scrapy_impersonate.ImpersonateDownloadHandler"


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

    async def download_request(self, request: Request) -> Response:
        if request.meta.get("impersonate"):
            return await self._curl.download_request(request)
        return await super().download_request(request)

    async def close(self) -> None:
        try:
            await self._curl.close()
        finally:
            await super().close()
