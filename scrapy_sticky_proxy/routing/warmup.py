"""Warm-up state: which sessions are warm, which warm-up runs, and how many
warm-ups in a row failed for each site.

A new session (a new key, or a key's next generation) sends its warm-up
requests (STICKY_PROXY_WARMUP) before anything else; its requests wait until
the warm-up ends. One warm-up at a time per (state key, generation): the
first request to find the session cold is told :data:`START`, the others
:data:`WAIT`. A warm-up ends :meth:`~WarmStates.succeeded` (warm),
:meth:`~WarmStates.failed` (the caller burns the session; the site's count
of failures in a row goes up, and past ``max_failures`` the spider closes)
or :meth:`~WarmStates.interrupted` (an outage, the spider closing, a cached
answer: nobody's fault, nothing counted). Once a site reached its bound,
outcomes that come after are not judged any more. A site that moves to
another proxy tier starts its count again (:meth:`~WarmStates.moved`): the
new tier is a new chance.

Pure logic with plain values; time is the ``now`` argument. Bounded: the
least recently used sessions and sites are forgotten first (a forgotten warm
session warms up again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

WARMUP_FAILED = "sticky_proxy_warmup_failed"  # the spider's close reasons
WARMUP_ERROR = "sticky_proxy_warmup_error"  # a bug in the warm-up function
GAVE_UP = "warmup/failed"  # give-up reason of a request whose warm-ups failed
# ... and of one whose warm-ups kept ending unjudged (dropped by another
# middleware, a cache that ignores dont_cache): nobody's fault, but bounded.
UNJUDGED_GAVE_UP = "warmup/unjudged"
# In a row, for one site. A site that bans a fifth of a provider's exits
# fails 10 warm-ups in a row about once in ten million; with 3, about once
# in 160 warm-ups, and a crawl of a thousand sessions would close.
DEFAULT_MAX_FAILURES = 10
GRACE = 1.0  # waiters wait this much past a warm-up's deadline

# Verdicts of WarmStates.check().
WARM = "warm"
START = "start"
WAIT = "wait"

_WARM = -1  # the entry of a warm session (running ones hold their token)
_FAILED = -2  # its last warm-up failed (the next request starts another)
UNJUDGED = "unjudged"  # a warm-up's outcome that is nobody's fault


class WarmupMarker(NamedTuple):
    """``meta[M.WARMUP]`` of a warm-up request: the session it warms (state
    key on its tier, generation), that tier, the running warm-up's token,
    and the site (host) whose tier window its outcomes count in."""

    key: str
    generation: int
    tier: int
    token: int
    site: str


def waiting_at(key: str, generation: int) -> str:
    """Where a session's requests wait for its warm-up (no route's name)."""
    return f" warm-up {generation} {key}"


def answered(response: Any) -> bool:
    """The default STICKY_PROXY_WARMUP_CHECK: a 2xx or 3xx answer."""
    return 200 <= response.status < 400


class WarmupSession(NamedTuple):
    """What the warm-up callable is told about the session: no credentials."""

    key: str  # the request's sticky_proxy_key
    country: str | None
    generation: int
    id: str  # the session id (also in meta["sticky_proxy_session"])


@dataclass(frozen=True)
class WarmupPolicy:
    """STICKY_PROXY_WARMUP and its settings, parsed."""

    warmup: Callable[[Any, WarmupSession], Any]
    check: Callable[[Any], Any] | None = None  # None: a 2xx or 3xx answer
    max_failures: int = DEFAULT_MAX_FAILURES
    timeout: float = 540.0


class WarmStates:
    def __init__(self, policy: WarmupPolicy, max_keys: int) -> None:
        self.policy = policy
        self.max_keys = max_keys
        # (state key, generation) -> _WARM, or (token, started) while running
        self._sessions: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._failures: OrderedDict[str, int] = OrderedDict()  # site -> in a row
        self._tokens = 0
        self.closed = False  # a site reached its bound: outcomes are moot

    def check(self, key: str, generation: int, now: float) -> tuple[str, float]:
        """``(WARM, 0)``; ``(START, timeout)``: the caller starts the warm-up
        now (:meth:`token` names it); or ``(WAIT, seconds)`` at most for the
        running one. A warm-up past its deadline and grace is forgotten
        (its outcome will not count) and started again."""
        name = (key, generation)
        entry = self._sessions.get(name)
        if entry == _WARM:
            self._sessions.move_to_end(name)
            return WARM, 0.0
        if isinstance(entry, tuple):
            left = entry[1] + self.policy.timeout - now
            if left > -GRACE:
                return WAIT, max(left, 0.0)
        self._tokens += 1
        self._put(name, (self._tokens, now))
        return START, self.policy.timeout

    def token(self, key: str, generation: int) -> int | None:
        """The running warm-up of the session, if one runs."""
        entry = self._sessions.get((key, generation))
        return entry[0] if isinstance(entry, tuple) else None

    def warm(self, key: str, generation: int) -> bool:
        return self._sessions.get((key, generation)) == _WARM

    def has_failed(self, key: str, generation: int) -> bool:
        """The session's last warm-up failed (and none runs since)."""
        return self._sessions.get((key, generation)) == _FAILED

    def live(self, key: str, generation: int, token: int) -> bool:
        """Warm-up *token* runs and its outcome will be judged."""
        return not self.closed and self.token(key, generation) == token

    def needs_none(self, key: str, generation: int) -> None:
        """The warm-up callable sent nothing for this session: it is warm."""
        self._put((key, generation), _WARM)

    def succeeded(self, key: str, generation: int, token: int, site: str) -> bool:
        """Warm-up *token* passed: the session is warm, the site's count of
        failures in a row starts again. False if the outcome is moot."""
        if self.closed or self.token(key, generation) != token:
            return False
        self._put((key, generation), _WARM)
        self._failures.pop(site, None)
        return True

    def failed(
        self, key: str, generation: int, token: int, site: str, counted: bool = True
    ) -> int | None:
        """Warm-up *token* failed: the session is to be burned. Returns the
        site's failures in a row (this one left out unless *counted*: it
        went through a tier the site has left), or None if the outcome is
        moot (not counted, nothing to burn)."""
        if not self.live(key, generation, token):
            return None
        self._put((key, generation), _FAILED)
        count = self._failures.pop(site, 0) + counted
        self._failures[site] = count
        if len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        if count >= self.policy.max_failures:
            self.closed = True
        return count

    def moved(self, site: str) -> None:
        """*site* moved to another proxy tier: its count starts again."""
        self._failures.pop(site, None)

    def interrupted(self, key: str, generation: int, token: int) -> None:
        """Warm-up *token* ended unjudged: the next request starts another."""
        if self.token(key, generation) == token:
            del self._sessions[(key, generation)]

    def _put(self, name: tuple[str, int], entry: Any) -> None:
        sessions = self._sessions
        sessions[name] = entry
        sessions.move_to_end(name)
        if len(sessions) > self.max_keys:
            sessions.popitem(last=False)
