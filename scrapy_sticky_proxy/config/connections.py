"""The download handler's connection settings: STICKY_PROXY_POOL_MAX_IDLE
(idle keep-alive connections kept, all sessions together) and
STICKY_PROXY_CONNECTIONS_PER_SESSION (connections a session opens at once
to one proxy, or for https to one host through it; 0: no limit, Scrapy's
way: a new connection whenever none of the session's is idle)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .readers import read_int

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

DEFAULT_POOL_MAX_IDLE = 256
MAX_POOL_IDLE = 100_000  # each one an open socket
DEFAULT_CONNECTIONS_PER_SESSION = 1
MAX_CONNECTIONS_PER_SESSION = 1000


def pool_max_idle(settings: BaseSettings) -> int:
    return (
        read_int(
            settings,
            "STICKY_PROXY_POOL_MAX_IDLE",
            DEFAULT_POOL_MAX_IDLE,
            0,
            MAX_POOL_IDLE,
        )
        or 0
    )


def connections_per_session(settings: BaseSettings) -> int:
    return (
        read_int(
            settings,
            "STICKY_PROXY_CONNECTIONS_PER_SESSION",
            DEFAULT_CONNECTIONS_PER_SESSION,
            0,
            MAX_CONNECTIONS_PER_SESSION,
        )
        or 0
    )
