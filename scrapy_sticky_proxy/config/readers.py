"""Typed readers of Scrapy settings (each error names its setting) and of
numbers in Request.meta (a bad one falls back to the setting's value)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..routing.secrets import shown

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy import Request
    from scrapy.settings import BaseSettings
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, setting: str) -> str:
    """Replace ``{env:NAME}`` with the environment variable NAME: a URL in
    settings.py (or passed to Scrapyd), its password in the environment."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                setting, f"refers to {{env:{name}}} but {name} is not set"
            )
        return os.environ[name]

    return _ENV_REF.sub(lookup, value) if "{env:" in value else value


def read_str(settings: BaseSettings, name: str) -> str | None:
    value = settings.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {type(value).__name__}")
    return value


_TRUE = ("1", "true")
_FALSE = ("0", "false")


def read_bool(settings: BaseSettings, name: str, default: bool) -> bool:
    """True/False, 1/0, or their text (``-s NAME=false``); not Scrapy's
    getbool, which takes any number (``2``, ``0.5``) and fails on others
    without naming the setting."""
    value = settings.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(name, f"expected True/False, got {shown(value)}")


def scrapy_bool(settings: BaseSettings, name: str, default: bool) -> bool:
    """One of Scrapy's own flags, read as Scrapy reads it (``2`` is True),
    with an error naming it instead of Scrapy's ValueError."""
    try:
        return settings.getbool(name, default)
    except ValueError:
        value = shown(settings.get(name))
        raise ConfigError(name, f"expected True/False, got {value}") from None


# Scrapy's own flags the plugin reads, and their defaults: a bad value
# stops the crawl naming it (Scrapy's ValueError names none).
SCRAPY_FLAGS = {
    "COOKIES_ENABLED": True,
    "HTTPCACHE_ENABLED": False,
    "METAREFRESH_ENABLED": True,
    "REDIRECT_ENABLED": True,
    "SCHEDULER_PERSIST": False,
}


def check_scrapy_flags(settings: BaseSettings) -> None:
    for name, default in SCRAPY_FLAGS.items():
        scrapy_bool(settings, name, default)


WEEK = 7 * 86400
MAX_REROLLS = 1000  # STICKY_PROXY_MAX_REROLLS and its per-request override


def whole_number(value: object, minimum: int, maximum: int) -> int | None:
    """*value* as an int in [minimum, maximum] when it is one (an int, or a
    float with no fraction; never a bool, a string, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    number = int(value)
    return number if minimum <= number <= maximum else None


def _number(name: str, value: Any, kind: str) -> float:
    """*value* as a finite number; strings are parsed (``-s NAME=10``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(name, f"expected {kind}, got {shown(value)}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise ConfigError(name, f"expected {kind}, got {shown(value)}") from None
    # An int is finite, and compared as it is: float(10**400) overflows.
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(name, f"must be a finite number, got {shown(value)}")
    return number


def read_int(
    settings: BaseSettings,
    name: str,
    default: int | None,
    minimum: int = 0,
    maximum: int = 10**9,
) -> int | None:
    value = settings.get(name)
    if value is None or value == "":
        return default
    kind = "a whole number"
    if isinstance(value, bool):
        raise ConfigError(name, f"expected a number, got {shown(value)}")
    number = _number(name, value, kind)
    if number != int(number) or (isinstance(value, str) and not _is_int(value)):
        raise ConfigError(name, f"expected {kind}, got {shown(value)}")
    return int(_in_range(name, int(number), minimum, maximum))


def read_float(
    settings: BaseSettings,
    name: str,
    default: float | None,
    *,
    allow_zero: bool = False,
    maximum: float = WEEK,
    minimum: float = 0.0,
) -> float | None:
    """Seconds; *minimum* is the smallest value other than 0 (a period of
    a nanosecond would spin)."""
    value = settings.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ConfigError(name, f"expected a number, got {shown(value)}")
    number = _number(name, value, "a number of seconds")  # float() once in range
    if number < 0 or (number == 0 and not allow_zero):
        allowed = "0 or more" if allow_zero else "positive"
        raise ConfigError(name, f"must be {allowed}, got {figure(number)}")
    if 0 < number < minimum:
        zero = "0 or " if allow_zero else ""
        raise ConfigError(
            name, f"must be {zero}at least {minimum:g} s, got {figure(number)}"
        )
    return float(_in_range(name, number, 0, maximum))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _in_range(name: str, number: float, minimum: float, maximum: float) -> float:
    if number < minimum:
        raise ConfigError(
            name, f"must be at least {figure(minimum)}, got {figure(number)}"
        )
    if number > maximum:
        raise ConfigError(
            name, f"must be at most {figure(maximum)}, got {figure(number)}"
        )
    return number


def figure(number: float) -> str:
    """A number for a message: whole ones without ``.0`` (``-s NAME=0`` is
    no ``0.0``), others as ``%g``; a huge int by its size."""
    if isinstance(number, int) and abs(number) > 10**15:
        return shown(number)
    if isinstance(number, int) or (number.is_integer() and abs(number) <= 10**15):
        return str(int(number))
    return f"{number:g}"


def read_list(settings: BaseSettings, name: str) -> list[Any]:
    """A list, or text (``-s`` on the command line, an environment
    variable): a JSON list if it starts with ``[``, else comma-separated."""
    value = settings.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str) and value.lstrip().startswith("["):
        value = json_text(name, value, "text that is not a JSON list")
        if not isinstance(value, list):
            raise ConfigError(name, "text that is not a JSON list")
        return value
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    raise ConfigError(name, f"expected a list, got {type(value).__name__}")


def json_text(name: str, text: str, problem: str) -> Any:
    """Setting *name*'s *text* as JSON, or a ConfigError saying *problem*."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f": {exc}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(name, f"{problem}{where}{quotes_hint(text)}") from None


def quotes_hint(text: str) -> str:
    """For text that is not JSON: a hint when it quotes with ``'``, as
    Python prints a list or a dict (``-s NAME="[{'url': ...}]"``)."""
    return " (JSON needs double quotes, not ')" if "'" in text else ""


DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def dotted_path(obj: Any) -> str:
    """The dotted path of a class, or *obj* itself if it is one already."""
    if isinstance(obj, str):
        return obj
    return f"{obj.__module__}.{obj.__qualname__}"


def read_dotted_paths(settings: BaseSettings, name: str) -> tuple[str, ...]:
    """A list of dotted paths (never imported here)."""
    paths = read_list(settings, name)
    for path in paths:
        if not isinstance(path, str) or not DOTTED.fullmatch(path):
            raise ConfigError(name, f"expected dotted paths, got {path!r}")
    return tuple(paths)


def meta_count(
    request: Request,
    name: str,
    *,
    default: int,
    maximum: int,
    stats: StatsCollector,
    redact: Callable[[str], str],
) -> int:
    """``request.meta[name]`` if it is a whole number from 0 to *maximum*,
    else *default*. A bad value (NaN, inf, ``"3"``, ``[1]``, a bool, out of
    range) is replaced in meta by *default*, so the request's copies carry a
    good one and it is counted once per request, in
    ``sticky_proxy/invalid_meta/<name>``; the first one of a crawl is logged."""
    meta = request.meta
    value = meta.get(name)
    if value is None:
        return default
    number = whole_number(value, 0, maximum)
    if number is not None:
        return number
    stat = f"sticky_proxy/invalid_meta/{name}"
    if not stats.get_value(stat):
        logger.warning(
            "Ignoring meta[%r] = %s of %s: expected a whole number from 0 to "
            "%d; using %d, the setting's value. Further bad values are only "
            "counted, in %s",
            name,
            shown(value, redact=redact),
            redact(request.url),
            maximum,
            default,
            stat,
        )
    stats.inc_value(stat)
    meta[name] = default
    return default
