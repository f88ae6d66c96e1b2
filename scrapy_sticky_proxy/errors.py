"""Exceptions raised by scrapy-sticky-proxy."""

from __future__ import annotations


class ConfigError(ValueError):
    """A STICKY_PROXY_* setting has a bad value.

    The message always starts with the setting's name, so the error printed at
    crawl start tells the user what to fix. It never contains a password.
    Raised at start, by the addon's settings check (or, wired by hand, by the
    first component that reads the settings); the setting's name is also in
    its ``setting`` attribute. A ``ValueError``.
    """

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        super().__init__(f"{setting}: {problem}")
