"""Records of requests that ran out of re-rolls, for users to find and replay.

A record is a JSON object: ``url``, ``method``, ``key``, ``reasons`` (one per
attempt), ``attempts``, ``time`` (Unix seconds), ``spider``, ``country``
when the request asked for one, and ``body`` (text, or base64 with
``body_encoding: "base64"``) when the request had one.
Headers are left out: they may hold cookies or credentials.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _meta as M
from .routing.secrets import shown

if TYPE_CHECKING:
    from scrapy import Request

    from .state.store import HealthStore

logger = logging.getLogger(__name__)


def give_up_record(
    request: Request, reasons: list[str], redact: Callable[[str], str]
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "url": redact(request.url),
        "method": redact(request.method),
        "key": redact(_text(request.meta.get(M.KEY, ""))),
        "reasons": [redact(r) for r in reasons],
        "attempts": len(reasons),
        "time": round(time.time(), 3),
    }
    country = request.meta.get(M.COUNTRY)
    if country:  # replayed without it, the request would go anywhere
        record["country"] = redact(_text(country))
    if request.body:
        try:
            record["body"] = redact(request.body.decode("utf-8"))
        except UnicodeDecodeError:  # bytes as latin-1, one char each: redacted too
            body = redact(request.body.decode("latin-1")).encode("latin-1")
            record["body"] = base64.b64encode(body).decode("ascii")
            record["body_encoding"] = "base64"
    callback = getattr(request.callback, "__name__", None)
    if callback:
        record["callback"] = callback
    return record


def keep_record(store: HealthStore, record: dict[str, Any]) -> bool:
    """Hand *record* to *store*; False if it could not be written, in which
    case the record itself is in an ERROR line."""
    # The redis backend keeps its give-up file in its local MemoryStore.
    local = getattr(store, "local", store)
    before = getattr(local, "gave_up_write_errors", 0)
    try:
        store.record_give_up(record)
    except Exception as exc:  # a third-party store: the record must survive
        logger.error(
            "Could not record a give-up (%s: %s); the record: %s",
            type(exc).__name__,
            exc,
            json.dumps(record),
        )
        return False
    return getattr(local, "gave_up_write_errors", 0) == before


def _text(value: object) -> str:
    """A meta value for a record: itself if text, else a short repr (meta is
    untrusted: a huge int has no str, an object's may raise)."""
    return value if isinstance(value, str) else shown(value, 200)
