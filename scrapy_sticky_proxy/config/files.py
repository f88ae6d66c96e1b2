"""STICKY_PROXY_GAVE_UP_FILE: a path checked at start, where a record that
cannot be written would otherwise be found at the end of a long crawl."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..routing.secrets import shown

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


def read_append_file(settings: BaseSettings, name: str) -> str | None:
    """A path to a file that will be appended to, checked now: a record that
    cannot be written at the end of a long crawl is found too late. Opened
    for append (created if missing, never truncated)."""
    value = settings.get(name)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a path, got {type(value).__name__}")
    if "\x00" in value or not _encodable(value):
        raise ConfigError(name, f"{shown(value)} is no file name")
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


def _encodable(text: str) -> bool:
    """Whether the file system takes *text* as a name (no lone surrogate)."""
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True
