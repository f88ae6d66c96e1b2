"""Where the Redis backend keeps what it shares, and small helpers for it.

Layout under the namespace ``ns`` (every value JSON or a plain string, never
pickle; session keys are stored as a digest, never as the URL):

==============================  ==============================================
``ns:g:<digest>``               a key's generation (string), expires after TTL
``ns:e:<digest>``               a session's error score (:mod:`.redis_scores`)
``ns:proxies``                  hash: static proxy id -> [failures, retry_at, ever_ok]
``ns:gave_up``                  list of give-up records (JSON), capped in length
``ns:crawlers:<host>:<pid>:<spider>:<tag>``  heartbeat (JSON), expires on its own
``ns:stats:bumps``              how many generation bumps happened (counter)
``ns:events``                   pub/sub: ``g <digest> <gen>``, ``p <id> <json>``,
                                ``e <digest> <gen> <score>``, ``t <site> <json>``
``ns:cookies:<digest>``         a session's cookies (JSON, :mod:`.redis_cookies`)
``ns:tiers``                    hash: site -> [tier, since] (:mod:`.redis_tiers`)
==============================  ==============================================

Anyone who can write to the namespace can put anything there, so every value
read back is checked here (type, range, length): a generation is a decimal
integer from 0 to :data:`MAX_GENERATION`, a digest 24 hex digits, a proxy
state ``[failures, retry_at, ever_ok]`` of bounded, finite numbers. What
fails is skipped and counted (:class:`Skips`), never raised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._numbers import finite

logger = logging.getLogger(__name__)

DEFAULT_TTL = 86400
HEARTBEAT_INTERVAL = 10.0
GAVE_UP_MAX = 1_000_000
# The highest generation read or written anywhere (exact in Lua's doubles,
# 10 digits). A key re-rolled this often has long stopped being one session.
MAX_GENERATION = 2**31 - 1
MAX_FAILURES = 2**31 - 1  # a static proxy's failure count
RETRY_AHEAD_MAX = 30 * 86400.0  # a proxy benched further ahead is not ours
MAX_VALUE_LEN = 4096  # a longer string read from Redis is not ours

# Lua: the stored generation as a number, or nil if it is not one of ours.
_STORED = """
local function stored(key)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  if #raw > 10 or not string.match(raw, '^%d+$') then return nil end
  local value = tonumber(raw)
  if value > tonumber(ARGV[#ARGV]) then return nil end
  return value
end
"""

# Compare and increment: bump only if the stored generation is not ahead of
# the one the caller saw banned. Returns {generation now, 1 if bumped here},
# or {-1, 0} if the stored value is not a generation (someone else's write)
# or the bump would pass the cap: a conflict left as it is, never announced.
# The counter is best effort (pcall): a wrong-typed one must not stop bumps.
BUMP = (
    _STORED
    + """
local current = stored(KEYS[1])
local seen = tonumber(ARGV[1])
if current == nil or seen >= tonumber(ARGV[4]) then return {-1, 0} end
if current > seen then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {current, 0}
end
local new = seen + 1
redis.call('SET', KEYS[1], new, 'EX', ARGV[2])
redis.pcall('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[2], 'g ' .. ARGV[3] .. ' ' .. new)
return {new, 1}
"""
)


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
    the value is not one (someone else's data): decimal digits only (no
    sign, space, exponent or ``0x``), at most :data:`MAX_GENERATION`."""
    if not isinstance(value, str) or not 0 < len(value) <= 10:
        return None
    if not (value.isascii() and value.isdigit()):
        return None
    generation = int(value)
    return generation if generation <= MAX_GENERATION else None


_DIGEST = re.compile(r"[0-9a-f]{24}")


def is_digest(value: object) -> bool:
    """Whether *value* can be a :func:`key_digest` (names under ``ns:g:``)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def parse_proxy_state(
    state: object, now: float
) -> tuple[int, float | None, bool] | None:
    """``(failures, retry_at, ever_ok)`` from a ``ns:proxies`` value, or
    ``None`` if it is not one: counts from 0 to :data:`MAX_FAILURES`, a
    finite ``retry_at`` (Unix time) no further than 30 days ahead of *now*."""
    if not isinstance(state, str) or len(state) > MAX_VALUE_LEN:
        return None
    try:
        value = json.loads(state, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list) or len(value) != 3:
        return None
    failures, retry_at, ever_ok = value
    if type(failures) is not int or not 0 <= failures <= MAX_FAILURES:
        return None
    if retry_at is not None:
        if not finite(retry_at):
            return None
        if not 0 <= retry_at <= now + RETRY_AHEAD_MAX:
            return None
        retry_at = float(retry_at)
    if not isinstance(ever_ok, bool):
        return None
    return failures, retry_at, ever_ok


def printable(value: object, limit: int = 120) -> str:
    """*value* for a log line or a terminal: control characters (ANSI
    escapes, newlines, bidi overrides) escaped, cut to about *limit*."""
    text = value if isinstance(value, str) else repr(value)
    cut = len(text) > limit
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return text[:limit] + "..." if cut or len(text) > limit else text


class Skips:
    """Values read from Redis that could not be trusted, counted by kind
    (``generation``, ``proxy``, ``event``, ``bump``) as the store's
    ``redis/skipped`` counters; the first of each kind is logged."""

    def __init__(self, at: str):
        self.at = at
        self.counts: Counter[str] = Counter()

    def skip(self, kind: str, where: str, why: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            logger.warning(
                "Skipped a value in Redis at %s: %s %s; every such value is "
                "skipped and counted in sticky_proxy/redis/skipped/%s",
                self.at,
                printable(where),
                why,
                kind,
            )

    def counters(self) -> dict[str, int]:
        if not self.counts:
            return {}
        counts = {f"redis/skipped/{k}": n for k, n in self.counts.items()}
        return {"redis/skipped": sum(self.counts.values()), **counts}


def short(exc: BaseException) -> str:
    """An error for a log line: its type and the start of its message (the
    server's words, never a value of ours)."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# Raise a key to at least a generation (re-seeding a Redis that lost data);
# a stored value that is not a generation is left as it is.
RAISE = (
    _STORED
    + """
local current = stored(KEYS[1])
if current == nil then return -1 end
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return current
"""
)


# How every client of ours reads Redis: as text, and a byte that is not
# UTF-8 (anyone may write one) as a lone surrogate, so that one value can
# neither fail a whole reply nor a name read by SCAN stop round-tripping;
# such a value then fails the checks every value gets, and is skipped.
DECODE: dict[str, Any] = {
    "decode_responses": True,
    "encoding_errors": "surrogateescape",
}


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
    """A Redis URL without its password, for messages. A login with no
    colon (``redis://s3cret@host``) is a user name to redis-py, and most
    often a password written in the wrong place: hidden too."""
    parts = urlsplit(url)
    if parts.query:  # redis-py also takes ?password=...
        query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
        parts = parts._replace(query=query)
    if parts.password is None:
        if "@" in parts.netloc:
            parts = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2])
        return urlunsplit(parts)
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")
