"""STICKY_PROXY_WARMUP and its settings, parsed into a
:class:`~scrapy_sticky_proxy.routing.warmup.WarmupPolicy` (None when no
warm-up is configured). The callables are imported and checked at start."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..routing.warmup import DEFAULT_MAX_FAILURES, WarmupPolicy
from .callables import user_callable
from .readers import WEEK, read_float, read_int

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

WARMUP = "STICKY_PROXY_WARMUP"
CHECK = "STICKY_PROXY_WARMUP_CHECK"
MAX_FAILURES = "STICKY_PROXY_WARMUP_MAX_FAILURES"
TIMEOUT = "STICKY_PROXY_WARMUP_TIMEOUT"
MAX_MAX_FAILURES = 1000
# A warm-up is a request or two (a landing page, a POST), each of which may
# be redirected or retried once: three download timeouts bound it.
TIMEOUT_DOWNLOADS = 3
DEFAULT_DOWNLOAD_TIMEOUT = 180.0  # Scrapy's


def warmup_policy(settings: BaseSettings, enabled: bool) -> WarmupPolicy | None:
    """Every warm-up setting is checked, even unused; the callables only when
    the package is enabled (a disabled one must start wherever it is)."""
    max_failures = read_int(
        settings, MAX_FAILURES, DEFAULT_MAX_FAILURES, 1, MAX_MAX_FAILURES
    )
    timeout = read_float(settings, TIMEOUT, None)
    if not enabled:
        return None
    warmup = user_callable(settings, WARMUP, "request, session")
    check = user_callable(settings, CHECK, "response")
    if warmup is None:
        if check is not None:
            raise ConfigError(CHECK, f"has no effect without {WARMUP}")
        return None
    if timeout is None:
        timeout = min(TIMEOUT_DOWNLOADS * _download_timeout(settings), float(WEEK))
    return WarmupPolicy(warmup, check, max_failures or DEFAULT_MAX_FAILURES, timeout)


def _download_timeout(settings: BaseSettings) -> float:
    """DOWNLOAD_TIMEOUT, or Scrapy's default when it is not a positive
    number (Scrapy's to report; it is no STICKY_PROXY_* setting)."""
    try:
        seconds = settings.getfloat("DOWNLOAD_TIMEOUT", DEFAULT_DOWNLOAD_TIMEOUT)
    except (TypeError, ValueError):
        return DEFAULT_DOWNLOAD_TIMEOUT
    return seconds if 0 < seconds < math.inf else DEFAULT_DOWNLOAD_TIMEOUT
