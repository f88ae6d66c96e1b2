"""The health store: which generation each session key is on.

A key starts at generation 0. A ban on (key, gen) moves it to gen + 1 -- once,
however many requests of that key report the same ban (compare and
increment). A session (key, generation) may also have an error score
(:mod:`..routing.tolerance`). Optional proactive rotation moves a key on
after a maximum age or number of uses, without a ban.

This module holds the interface every backend implements: the per-process
:class:`~.memory.MemoryStore` and the shared :class:`~.redis_store.RedisStore`
(which keeps a MemoryStore as its local view). Pure: no Scrapy, no I/O, and
time is always a parameter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_KEYS = 100_000
# The highest error score kept (routing/tolerance.py: a session burns at
# STICKY_PROXY_BAN_TOLERANCE, at most 100).
MAX_SCORE = 1000


@dataclass(frozen=True)
class Rotation:
    """Proactive rotation limits; ``None`` disables a limit."""

    max_age: float | None = None
    max_uses: int | None = None

    @property
    def enabled(self) -> bool:
        return self.max_age is not None or self.max_uses is not None


class HealthStore(ABC):
    """What the middleware needs from a store. Every method is local and
    fast: a backend that shares state does its I/O in the background."""

    #: Called with (proxy_id, failures, retry_at, ever_ok) when another
    #: process reports a static proxy's health (shared backends only).
    on_proxy_update: Callable[[str, int, float | None, bool], None] | None = None
    #: Called with (site, tier, since) when another process moved a site to
    #: another proxy tier (shared backends only).
    on_tier_update: Callable[[str, int, float], None] | None = None

    @abstractmethod
    def acquire(self, key: str, now: float) -> tuple[int, bool]:
        """Return the generation to use for *key* and whether it was just
        rotated (max age or max uses reached); counts one use."""

    def lookup(self, key: str) -> Awaitable[None] | None:
        """``None`` when :meth:`acquire` can answer for *key* from memory
        (always for keys never burned). Otherwise an awaitable to await
        before :meth:`acquire`: a shared backend fetches what it forgot (a
        burned key evicted past its ``max_keys``)."""
        return None

    @abstractmethod
    def generation(self, key: str) -> int:
        """The current generation of *key*, without counting a use."""

    @abstractmethod
    def ban(self, key: str, generation: int, now: float) -> int:
        """Record a ban of (*key*, *generation*); return the key's generation
        afterwards. Banning a generation that is already behind changes
        nothing."""

    def score(self, key: str, generation: int) -> int:
        """The error score of (*key*, *generation*): ban verdicts it was
        spared, less successes since (0 for a store that keeps none)."""
        return 0

    def add_score(self, key: str, generation: int, delta: int, now: float) -> int:
        """Add *delta* to the score of (*key*, *generation*), kept from 0 to
        :data:`MAX_SCORE`, and return it. A store that keeps no scores
        answers :data:`MAX_SCORE` to a verdict: every verdict burns."""
        return MAX_SCORE if delta > 0 else 0

    @abstractmethod
    def record_give_up(self, record: dict[str, Any]) -> None:
        """Keep a request that ran out of re-rolls where the user finds it."""

    @abstractmethod
    def __len__(self) -> int:
        """How many keys the store tracks (keys never banned nor rotated are
        not tracked when rotation is off)."""

    def counters(self) -> dict[str, int]:
        """Counters of the store's own, written as ``sticky_proxy/<name>``
        stats at every progress line and at close."""
        return {}

    def proxy_changed(  # noqa: B027
        self, proxy_id: str, failures: int, retry_at: float | None, ever_ok: bool
    ) -> None:
        """A static proxy's health changed here (shared backends publish it)."""

    def tier_changed(self, site: str, tier: int, since: float) -> None:  # noqa: B027
        """A site moved to another proxy tier here (shared backends publish
        it; the memory backend has nobody to tell)."""

    async def open(self) -> None:  # noqa: B027
        """Start background work (connections, subscriptions)."""

    async def close(self) -> None:  # noqa: B027
        """Stop background work and release resources."""
