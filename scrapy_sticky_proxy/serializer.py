"""A JSON serializer for scrapy-redis's request queue, instead of pickle.

``SCHEDULER_SERIALIZER = "scrapy_sticky_proxy.serializer"``: scrapy-redis
pickles queued requests by default, and unpickling what is read from a shared
Redis runs whatever code the writer put there. This module stores the dict of
``Request.to_dict()`` as JSON, with bytes (body, headers) as base64 objects.
Request meta must then hold JSON-friendly values (str, numbers, lists, dicts,
bytes), which is true of everything this package puts there.
"""

from __future__ import annotations

import base64
import json
from typing import Any

_BYTES = "__b64__"
_PAIRS = "__pairs__"  # a dict with non-str keys (headers have bytes keys)


def _encode(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {_BYTES: base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, dict):
        if all(isinstance(key, str) for key in obj):
            return {key: _encode(value) for key, value in obj.items()}
        return {_PAIRS: [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_encode(value) for value in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(
        f"cannot queue a request whose meta holds a {type(obj).__name__}; "
        "scrapy_sticky_proxy.serializer stores requests as JSON"
    )


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _BYTES in obj:
            return base64.b64decode(obj[_BYTES])
        if _PAIRS in obj:
            return {key: value for key, value in obj[_PAIRS]}
    return obj


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(_encode(obj), separators=(",", ":"))


def loads(data: str | bytes) -> dict[str, Any]:
    return json.loads(data, object_hook=_hook)
