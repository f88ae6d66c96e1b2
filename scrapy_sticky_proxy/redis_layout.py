"""Where the Redis backend keeps what it shares, and small helpers for it.

Layout under the namespace ``ns`` (every value JSON or a plain string, never
pickle; session keys are stored as a digest, never as the URL):

==============================  ==============================================
``ns:g:<digest>``               a key's generation (string), expires after TTL
``ns:proxies``                  hash: static proxy id -> [failures, retry_at, ever_ok]
``ns:gave_up``                  list of give-up records (JSON), capped in length
``ns:crawlers:<host>:<pid>:<spider>``  heartbeat (JSON), expires on its own
``ns:stats:bumps``              how many generation bumps happened (counter)
``ns:events``                   pub/sub channel: ``g <digest> <gen>``, ``p <id> <json>``
==============================  ==============================================
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_TTL = 86400
HEARTBEAT_INTERVAL = 10.0
GAVE_UP_MAX = 1_000_000

# Compare and increment: bump only if the stored generation is not ahead of
# the one the caller saw banned. Returns {generation now, 1 if bumped here}.
BUMP = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if current > seen then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {current, 0}
end
local new = seen + 1
redis.call('SET', KEYS[1], new, 'EX', ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[2], 'g ' .. ARGV[3] .. ' ' .. new)
return {new, 1}
"""


# Raise a key to at least a generation (re-seeding a Redis that lost data).
RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return current
"""


def quiet_client() -> dict[str, Any]:
    """Client options that spare every new connection the handshake extras
    (CLIENT SETINFO, maintenance notifications) of recent redis-py
    versions: they cost commands and fail on older servers."""
    if importlib.util.find_spec("redis.driver_info") is None:  # redis < 8
        return {"lib_name": None, "lib_version": None}
    from redis.maint_notifications import MaintNotificationsConfig

    return {
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }


def scan_pattern(prefix: str) -> str:
    """A SCAN pattern for every key under *prefix*, its glob characters
    escaped (a namespace like ``site[1]`` must not match its neighbours)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "*"


def key_digest(key: str) -> str:
    """What Redis and the local view know a session key by."""
    return hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=12
    ).hexdigest()


def redact_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
