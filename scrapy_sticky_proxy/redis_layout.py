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


# A static proxy's health: stored, kept for the TTL, announced. One script
# per change, like BUMP, so that each queued change is one command with one
# reply: written whole or not at all, never half and then again.
PROXY = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], 'p ' .. ARGV[1] .. ' ' .. ARGV[2])
return 1
"""

# A give-up record. Give-ups wait for a person: no expiry, but a length cap
# (the oldest go first) so that the list cannot grow unbounded.
GAVE_UP = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return 1
"""

# Errors after which the same command can succeed later: the server is out
# of memory, a replica after a failover, loading, busy, or lost its scripts.
# Matched in the message too: Redis 6 reports a script's inner error as
# "ERR Error running script ...: -OOM ...".
_TRANSIENT = re.compile(
    r"(?<![A-Za-z])(OOM|READONLY|LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN"
    r"|NOSCRIPT|NOREPLICAS|MISCONF)(?![A-Za-z])"
)


def is_lost_connection(exc: BaseException) -> bool:
    """Redis did not answer (as opposed to answering with an error)."""
    from redis.exceptions import ConnectionError, TimeoutError

    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


def is_transient(exc: BaseException) -> bool:
    """An error reply that retrying later may cure. Any other error reply
    (WRONGTYPE from a key someone else wrote, a bad argument) will come back
    on every retry: the change is poison."""
    from redis import exceptions as e

    transient = (e.ReadOnlyError, e.OutOfMemoryError, e.NoScriptError)
    return isinstance(exc, transient) or bool(_TRANSIENT.search(str(exc)))


def parse_generation(value: object) -> int | None:
    """A generation as Redis or a pub/sub message holds it, or ``None`` if
    the value is not one (someone else's data)."""
    if not isinstance(value, str) or len(value) > 18:
        return None
    return int(value) if value.isascii() and value.isdigit() else None


def short(exc: BaseException) -> str:
    """An error for a log line: its type and the start of its message (the
    server's words, never a value of ours)."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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
