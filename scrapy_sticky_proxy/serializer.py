"""A JSON serializer for scrapy-redis's request queue, instead of pickle.

``SCHEDULER_SERIALIZER = "scrapy_sticky_proxy.serializer"``: scrapy-redis
pickles queued requests by default, and unpickling what is read from a shared
Redis runs whatever code the writer put there. This module stores the dict of
``Request.to_dict()`` as JSON, with bytes (body, headers) as base64 objects.
Request meta must then hold JSON-friendly values (str, numbers, lists, dicts,
bytes), which is true of everything this package puts there.

A queue entry names its request class in ``"_class"``, and Scrapy's
``request_from_dict`` imports whatever it names: a module's import runs its
code. So only these classes are rebuilt: Scrapy's own (``Request``,
``FormRequest``, ``JsonRequest``, ``XmlRpcRequest``), those listed in
``STICKY_PROXY_SERIALIZER_CLASSES``, and ``Request`` subclasses in the
packages of ``SPIDER_MODULES`` (the project's own code). scrapy-redis calls
:func:`loads` without settings: the last two are learnt by :func:`configure`,
which the addon's extension calls with each crawler's configuration. An entry
naming anything else is never imported: it becomes a ``data:`` request that
leaves no socket and reaches no callback of the spider, one warning per class
name, counted in ``counts``. So does an entry that is no request at all (not
JSON of this serializer, a field of another type than ``Request.to_dict()``
writes): before, scrapy-redis's pop raised and the entry was lost.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http import FormRequest, JsonRequest, XmlRpcRequest
from scrapy.utils.misc import load_object

from . import _meta as M
from .config.readers import DOTTED
from .state.redis_layout import printable

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

_BYTES = "__b64__"
_PAIRS = "__pairs__"  # a dict with non-str keys (headers have bytes keys)
SETTING = "STICKY_PROXY_SERIALIZER_CLASSES"

_SCRAPY: dict[str, type[Request]] = {
    f"{cls.__module__}.{cls.__name__}": cls  # what Request.to_dict() writes
    for cls in (Request, FormRequest, JsonRequest, XmlRpcRequest)
}
_SCRAPY.update(
    {f"scrapy.{c.__name__}": c for c in (Request, FormRequest)}
    | {f"scrapy.http.{c.__name__}": c for c in _SCRAPY.values()}
)
_allowed: set[str] = set()  # STICKY_PROXY_SERIALIZER_CLASSES of every crawler
_packages: set[str] = set()  # top-level packages of SPIDER_MODULES
_warned: set[str] = set()
# What Request.to_dict() writes, with each field's type.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "method": str,
    "headers": dict,
    "body": bytes,
    "cookies": (dict, list),
    "meta": dict,
    "encoding": str,
    "priority": int,
    "dont_filter": bool,
    "callback": (str, type(None)),
    "errback": (str, type(None)),
    "flags": list,
    "cb_kwargs": dict,
}
#: Queue entries skipped in this process (the extension reports its crawl's).
counts = {"skipped": 0}


def configure(classes: Iterable[str] = (), spider_modules: Iterable[Any] = ()) -> None:
    """Allow *classes* (a crawler's ``serializer_classes``, checked dotted
    paths) and request classes of the packages of *spider_modules* (its
    SPIDER_MODULES); process-wide, a union over the crawlers of the process."""
    _allowed.update(classes)
    _packages.update(
        m.split(".")[0]
        for m in spider_modules
        if isinstance(m, str) and DOTTED.match(m + ".x")
    )


class SkippedRequest(Request):
    """What a queue entry naming a class not allowed becomes."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["callback"] = _discard
        kwargs.pop("errback", None)
        super().__init__(*args, **kwargs)


def _discard(response: Any) -> None:
    return None


def _request_class(path: object) -> type[Request] | None:
    if not isinstance(path, str) or len(path) > 300:
        return None
    if path in _SCRAPY:
        return _SCRAPY[path]
    if path not in _allowed and not (
        DOTTED.fullmatch(path) and path.split(".")[0] in _packages
    ):
        return None
    try:
        cls = load_object(path)
    except Exception:  # whatever the module raised on import
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Request) else None


def _skip(entry: dict[str, Any]) -> dict[str, Any]:
    name = printable(entry["_class"], 100)
    return _skipped(
        name,
        "Skipped a scrapy-redis queue entry whose _class %s is not allowed "
        "(never imported; allow it in %s)",
        name,
        SETTING,
    )


def _shape(obj: Any) -> str | None:
    """Why *obj* is no dict of ``Request.to_dict()``, or None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
        return "it has no URL"
    for name, kind in _FIELDS.items():
        if name in obj and not isinstance(obj[name], kind):
            return f"its {name} is a {type(obj[name]).__name__}"
    for values in obj.get("headers", {}).values():
        if not isinstance(values, list) or not all(
            isinstance(value, (bytes, str)) for value in values
        ):
            return "its headers are not lists of bytes"
    return None


def _skipped(name: str, message: str, *args: object) -> dict[str, Any]:
    """What a skipped entry becomes; one warning per *name*."""
    counts["skipped"] += 1
    if name not in _warned and len(_warned) < 100:
        _warned.add(name)
        logger.warning(message, *args)
    meta = {M.DONT: True, "dont_cache": True, "_sticky_proxy_skipped": name}
    return {
        "_class": SkippedRequest,
        "url": "data:,",
        "dont_filter": True,
        "meta": meta,
    }


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
    try:
        obj = json.loads(data, object_hook=_hook)
        why = _shape(obj)
    except (ValueError, TypeError, RecursionError) as error:  # base64's too
        why = f"it is no JSON of this serializer ({type(error).__name__})"
    if why is not None:
        return _skipped(
            why, "Skipped a scrapy-redis queue entry that is no request: %s", why
        )
    if "_class" in obj:
        cls = _request_class(obj["_class"])
        if cls is None:
            return _skip(obj)
        obj["_class"] = cls  # checked: request_from_dict imports nothing more
    return obj
