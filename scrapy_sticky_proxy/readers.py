"""Typed readers of Scrapy settings; each error names its setting."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, setting: str) -> str:
    """Replace ``{env:NAME}`` with the environment variable NAME, so that a
    URL can be written in settings.py (or passed to Scrapyd) while its
    password stays in the environment."""

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


def read_bool(settings: BaseSettings, name: str, default: bool) -> bool:
    try:
        return settings.getbool(name, default)
    except ValueError:
        raise ConfigError(
            name, f"expected True/False, got {settings.get(name)!r}"
        ) from None


def read_int(
    settings: BaseSettings, name: str, default: int | None, minimum: int = 0
) -> int | None:
    value = settings.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
        if isinstance(value, float) and value != number:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {number}")
    return number


def read_float(
    settings: BaseSettings, name: str, default: float | None, allow_zero: bool = False
) -> float | None:
    value = settings.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            name, f"expected a number of seconds, got {value!r}"
        ) from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(name, f"must be positive, got {number}")
    return number


def read_list(settings: BaseSettings, name: str) -> list[Any]:
    value = settings.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    raise ConfigError(name, f"expected a list, got {type(value).__name__}")
