"""The user's code that settings name, checked once at start: the key
function (STICKY_PROXY_KEY), the ban policy class (STICKY_PROXY_BAN_POLICY)
and the warm-up functions (STICKY_PROXY_WARMUP, STICKY_PROXY_WARMUP_CHECK).
Accepted as they were, ``builtins.id`` or ``os.getcwd`` as a key or
``builtins.int`` as a policy made every request fail, one by one, while the
crawl "finished". Also what imports a dotted path for the other settings
(:func:`load_object`, :func:`load_class`)."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..routing.keys import KEY_POLICIES, KeyFunc, load_key_policy
from .readers import read_str, shown

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.settings import BaseSettings

KEY = "STICKY_PROXY_KEY"
POLICY = "STICKY_PROXY_BAN_POLICY"
# Named, not imported: bans.py is a component, which config/ never imports.
BAN_POLICY_BASE = "scrapy_sticky_proxy.bans.BanPolicy"
SAMPLE_URL = "http://example.com/"


def key_function(settings: BaseSettings) -> KeyFunc:
    """STICKY_PROXY_KEY as a function; one of the user's is called on a sample
    request (built here, never sent), and must take it and return a
    str. A function that raises on the sample, or returns None, is let
    through: it may need what only the spider's requests carry
    (``request.meta["video_id"]``, ``request.meta.get("video_id")``)."""
    value = settings.get(KEY)
    func = load_key_policy("url" if value is None or value == "" else value)
    if func in KEY_POLICIES.values():
        return func
    from scrapy import Request

    sample = Request(SAMPLE_URL)
    shown = getattr(func, "__qualname__", None) or repr(func)
    try:
        inspect.signature(func).bind(sample)
    except TypeError:
        raise ConfigError(
            KEY, f"{shown} must accept one argument, the request"
        ) from None
    except ValueError:  # no signature to read (some builtins): call it
        pass
    try:
        key = func(sample)
    except Exception:
        return func
    if key is not None and not isinstance(key, str):
        raise ConfigError(
            KEY,
            f"{shown} must return a str; for Request({SAMPLE_URL!r}) it "
            f"returned {type(key).__name__}",
        )
    return func


def ban_policy(settings: BaseSettings) -> type | None:
    """STICKY_PROXY_BAN_POLICY: a subclass of BanPolicy, imported now."""
    path = read_str(settings, POLICY)
    if path is None:
        return None
    cls = load_class(path, POLICY)
    if not any(_dotted(base) == BAN_POLICY_BASE for base in cls.__mro__):
        raise ConfigError(
            POLICY, f"{path!r} is not a subclass of scrapy_sticky_proxy.BanPolicy"
        )
    return cls


def user_callable(
    settings: BaseSettings, name: str, arguments: str
) -> Callable[..., Any] | None:
    """The callable setting *name* holds (itself, or its dotted path),
    imported now; it must accept *arguments* (their names, comma-separated)
    positionally. None when the setting is unset."""
    value = settings.get(name)
    if value is None or value == "":
        return None
    func = load_object(value, name) if isinstance(value, str) else value
    if not callable(func):
        raise ConfigError(
            name, f"{shown(value)} is a {type(func).__name__}, not a callable"
        )
    count = arguments.count(",") + 1
    try:
        inspect.signature(func).bind(*[None] * count)
    except TypeError:
        raise ConfigError(
            name, f"{shown(value)} must accept {count} argument(s): {arguments}"
        ) from None
    except ValueError:  # no signature to read (some builtins)
        pass
    return func


def _dotted(cls: Any) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_object(path: str, name: str) -> Any:
    """What dotted *path* names, imported now."""
    if not isinstance(path, str):
        raise ConfigError(name, f"expected a dotted path, got {shown(path)}")
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(name, f"cannot import {path!r}: {exc}") from None


def load_class(path: str, name: str) -> type:
    """The class at dotted *path*, imported now."""
    obj = load_object(path, name)
    if not isinstance(obj, type):
        raise ConfigError(name, f"{path!r} is not a class")
    return obj
