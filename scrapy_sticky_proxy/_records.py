"""Records of requests that ran out of re-rolls, for users to find and replay.

A record is a JSON object: ``url``, ``method``, ``key``, ``reasons`` (one per
attempt), ``attempts``, ``time`` (Unix seconds), ``spider``, and ``body``
(text, or base64 with ``body_encoding: "base64"``) when the request had one.
Headers are left out: they may hold cookies or credentials.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _meta as M
from .errors import ConfigError

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.settings import BaseSettings

    from .state.store import HealthStore

logger = logging.getLogger(__name__)


def checked_gave_up_file(settings: BaseSettings) -> str | None:
    """The give-up file, checked now: a record that cannot be written at
    the end of a long crawl is found too late. Opened for append (created
    if missing, never truncated)."""
    name = "STICKY_PROXY_GAVE_UP_FILE"
    value = settings.get(name)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a path, got {type(value).__name__}")
    path = value
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(name, f"the directory {directory} is missing")
    if os.path.isdir(path):
        raise ConfigError(name, f"{path} is a directory, not a file")
    try:
        open(path, "a", encoding="utf-8").close()
    except OSError as exc:
        raise ConfigError(name, f"cannot append to {path}: {exc.strerror}") from None
    return path


def give_up_record(
    request: Request, reasons: list[str], redact: Callable[[str], str]
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "url": redact(request.url),
        "method": request.method,
        "key": redact(str(request.meta.get(M.KEY, ""))),
        "reasons": reasons,
        "attempts": len(reasons),
        "time": round(time.time(), 3),
    }
    if request.body:
        try:
            record["body"] = redact(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            record["body"] = base64.b64encode(request.body).decode("ascii")
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
