"""Tolerance: how many ban verdicts a session takes before it burns, and how
long a request waits before it tries the same session again.

Each session (key, generation) has an error score, kept in the health store:
a ban verdict adds one, a success takes one off. Below the tolerance
(``STICKY_PROXY_BAN_TOLERANCE``) a verdict is *tolerated*: the request is
retried on the same session after a wait, the response's ``Retry-After``
when it has one, else a backoff that doubles with the score, never longer
than ``STICKY_PROXY_RETRY_AFTER_MAX``. When the score reaches the tolerance,
the session burns (the key moves to its next generation). A tolerance of 1
burns at the first verdict, as before tolerance existed, and keeps no score.

Two bounds keep a request from trying one session forever:

* a request is tolerated at most ``tolerance - 1`` times on one session,
  whatever the score (other requests' successes lower it, and must not keep
  one that is always refused going round);
* a ``Retry-After`` longer than the bound burns the session at once: waiting
  less than the site asked would earn another refusal, and the session is of
  no use for that long.

Pure: no Scrapy, and time is injected. It is wall-clock time because a
retry's deadline travels in the request's meta, maybe through a queue in
Redis to another process.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._numbers import finite

if TYPE_CHECKING:
    from ..state.store import HealthStore

MAX_TOLERANCE = 100  # STICKY_PROXY_BAN_TOLERANCE
MAX_RETRY_AFTER_TEXT = 64  # a longer Retry-After value is not one
# The longest wait of the plugin's own before a retry (a route wait, the
# third: _verdicts.ROUTE_WAITS): STICKY_PROXY_RETRY_AFTER_MAX caps the others.
OWN_WAIT_MAX = 2.0

# Why a verdict burns or is tolerated (Verdict.why).
OFF = "off"  # tolerance 1: every verdict burns
STALE = "stale"  # the session burned already (another request's verdict)
SCORE = "score"  # the score reached the tolerance
REQUEST = "request"  # this request was tolerated tolerance - 1 times already
TOO_LONG = "retry_after_too_long"
RETRY_AFTER = "retry_after"
BACKOFF = "backoff"


@dataclass(frozen=True)
class TolerancePolicy:
    tolerance: int = 1
    backoff: float = 1.0  # the first wait without Retry-After; doubles
    wait_max: float = 60.0  # the longest wait, Retry-After included

    def __post_init__(self) -> None:
        if not 1 <= self.tolerance <= MAX_TOLERANCE:
            raise ValueError(f"tolerance must be from 1 to {MAX_TOLERANCE}")


@dataclass(frozen=True)
class Verdict:
    burn: bool
    why: str
    seconds: float = 0.0  # the wait before the same-session retry


class Tolerance:
    def __init__(
        self,
        policy: TolerancePolicy,
        store: HealthStore,
        wall: Callable[[], float] = time.time,
    ):
        self.policy = policy
        self.store = store
        self.wall = wall
        self.enabled = policy.tolerance > 1

    def verdict(
        self, key: str, generation: int, tried: object, retry_after: object = None
    ) -> Verdict:
        """A ban verdict on (*key*, *generation*), for a request tolerated
        *tried* times on it already (meta: untrusted), whose response said
        *retry_after* (the header's raw value, or None)."""
        policy = self.policy
        if not self.enabled:
            return Verdict(True, OFF)
        if self.store.generation(key) > generation:
            return Verdict(True, STALE)
        wait = parse_retry_after(retry_after, self.wall())
        if wait is not None and wait > policy.wait_max:
            return Verdict(True, TOO_LONG)
        score = self.store.add_score(key, generation, 1, self.wall())
        if score >= policy.tolerance:
            return Verdict(True, SCORE)
        if tried_count(tried) + 1 >= policy.tolerance:
            return Verdict(True, REQUEST)
        if wait is not None:
            return Verdict(False, RETRY_AFTER, wait)
        backoff = policy.backoff * 2.0 ** min(score - 1, 30)
        return Verdict(False, BACKOFF, min(backoff, policy.wait_max))

    def succeeded(self, key: str, generation: int) -> None:
        """A response of (*key*, *generation*) was no ban: its score drops."""
        if self.enabled and self.store.score(key, generation):
            self.store.add_score(key, generation, -1, self.wall())

    def deadline(self, seconds: float) -> float:
        """The wall-clock time a retry told to wait *seconds* may go."""
        return self.wall() + seconds

    def remaining(self, deadline: object) -> float:
        """How long a retry with *deadline* (meta: untrusted) still waits:
        from 0 to the policy's ``wait_max`` (or to OWN_WAIT_MAX, the plugin's
        own waits, which a small STICKY_PROXY_RETRY_AFTER_MAX must not cut);
        0 for anything not a time."""
        if not finite(deadline):
            return 0.0
        longest = max(self.policy.wait_max, OWN_WAIT_MAX)
        return min(max(deadline - self.wall(), 0.0), longest)


def tried_count(value: object) -> int:
    """How often a request was tolerated on its session (meta: untrusted)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOLERANCE)
    return 0


def parse_retry_after(value: object, now: float) -> float | None:
    """Seconds a ``Retry-After`` value (bytes or str, from a response:
    untrusted) asks to wait, from *now* (Unix time): delta-seconds or an
    HTTP date, 0 for a date in the past; None for anything else."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or len(value) > MAX_RETRY_AFTER_TEXT:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text), 10**9))
    if not text.isascii():
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        seconds = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
