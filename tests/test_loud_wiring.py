"""Issue 13: what the package did quietly, said out loud. A handler that
shares proxy connections between sessions is reported at start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.test import get_crawler

from scrapy_sticky_proxy import StickyProxyMiddleware

ROOT = Path(__file__).resolve().parent.parent
URL = "http://user-{session}:s3cret-pw@gw.example:8000"
STOCK = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
IMPERSONATE = "scrapy_impersonate.ImpersonateDownloadHandler"
OURS = "scrapy_sticky_proxy.StickyProxyDownloadHandler"
SHARED_OK = "STICKY_PROXY_ALLOW_SHARED_CONNECTIONS"


# -- item 1: a handler that shares proxy connections between sessions --------------


def start_warnings(caplog: pytest.LogCaptureFixture, **settings: Any) -> list[str]:
    """The warnings about shared connections that building a crawler (the
    addon included) and its middleware logs."""
    caplog.set_level(logging.WARNING)
    crawler = get_crawler(
        settings_dict={
            "ADDONS": {"scrapy_sticky_proxy.Addon": 100},
            "STICKY_PROXY_URL": URL,
            **settings,
        }
    )
    StickyProxyMiddleware.from_crawler(crawler)
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "connection" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("handlers", "named"),
    [
        # settings.py (or -s) beats the addon, which writes at addon priority
        ({"http": STOCK}, STOCK),
        # scrapy-impersonate sends requests without meta["impersonate"]
        # through Scrapy's stock pool
        ({"http": IMPERSONATE, "https": IMPERSONATE}, IMPERSONATE),
    ],
    ids=["stock", "impersonate"],
)
def test_a_handler_that_shares_connections_is_reported_once(
    caplog: pytest.LogCaptureFixture, handlers: dict[str, str], named: str
) -> None:
    [warning] = start_warnings(caplog, DOWNLOAD_HANDLERS=handlers)
    assert f"DOWNLOAD_HANDLERS: http: {named}" in warning
    assert "plain-http requests of different sessions may share a connection" in (
        warning
    )
    assert "pins the exit per connection" in warning
    assert SHARED_OK in warning
    # https tunnels of the stock pool are keyed by the credential: not named.
    assert "https:" not in warning


@pytest.mark.parametrize("handler", [STOCK, IMPERSONATE])
def test_shared_connections_can_be_accepted_deliberately(
    caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    handlers = {"http": handler, "https": handler}
    assert start_warnings(caplog, DOWNLOAD_HANDLERS=handlers, **{SHARED_OK: True}) == []


def test_our_handlers_are_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    assert start_warnings(caplog) == []  # the addon's
    impersonate = "scrapy_sticky_proxy.impersonate.StickyImpersonateDownloadHandler"
    handlers = {"http": impersonate, "https": OURS}
    assert start_warnings(caplog, DOWNLOAD_HANDLERS=handlers) == []
