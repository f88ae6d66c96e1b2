"""Static proxy health: one proxy's state machine, and the policy that drives it.

A :class:`ProxyHealth` counts consecutive failures and benches the proxy
with a jittered, doubling backoff (:class:`PoolPolicy`); :mod:`.pool` keeps
one per proxy and picks among those not benched.

DEGRADED proxies keep full weight: a cut would move keys after one failure,
the churn stickiness exists to avoid. Failures reported while a proxy is
benched are ignored: they come from requests already in flight, and one burst
must not push a proxy straight to DEAD.

Pure logic: time is the ``now`` argument (seconds), jitter an injected Random.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .._numbers import finite

# Caps 2 ** (f - unhealthy_after) so a huge restored count cannot overflow.
_MAX_DOUBLINGS = 64


class ProxyState(enum.Enum):
    """Health from the consecutive failure count ``f`` (see :class:`PoolPolicy`).

    UNKNOWN: never reported. HEALTHY: last report a success. DEGRADED:
    ``0 < f < unhealthy_after``. UNHEALTHY: benched until ``retry_at``, then on
    probation: a success heals it, a failure benches it twice as long (capped,
    jittered). DEAD: ``f >= dead_after``, benched ``backoff_max`` per failure,
    then on probation too, but ``all_dead`` counts it as gone.
    """

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DEAD = "dead"


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class PoolPolicy:
    """Failure thresholds and backoff timing (seconds) for the proxy pool."""

    unhealthy_after: int = 3
    dead_after: int = 12
    backoff_base: float = 30.0
    backoff_max: float = 1800.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not _is_count(self.unhealthy_after, 1):
            raise ValueError("unhealthy_after must be an integer >= 1")
        if not _is_count(self.dead_after, self.unhealthy_after + 1):
            raise ValueError("dead_after must be an integer > unhealthy_after")
        for name in ("backoff_base", "backoff_max"):
            seconds = getattr(self, name)
            if not finite(seconds) or seconds <= 0:
                raise ValueError(f"{name} must be a positive finite number")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must not be less than backoff_base")
        if not finite(self.jitter) or not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


class ProxyHealth:
    """One proxy's health; ``retry_at`` is set while benched or on probation."""

    __slots__ = ("ever_ok", "failures", "retry_at")

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at: float | None = None
        self.ever_ok = False

    def benched(self, now: float) -> bool:
        retry_at = self.retry_at
        return retry_at is not None and now < retry_at

    def succeed(self) -> None:
        self.failures = 0
        self.retry_at = None
        self.ever_ok = True

    def fail(
        self, now: float, policy: PoolPolicy, rng: random.Random, probe: bool
    ) -> None:
        """Count a failure, unless benched and not the *probe*."""
        if not probe and self.benched(now):
            return
        self.failures += 1
        failures = self.failures
        if failures >= policy.dead_after:
            self.retry_at = now + policy.backoff_max
        elif failures >= policy.unhealthy_after:
            doublings = min(failures - policy.unhealthy_after, _MAX_DOUBLINGS)
            delay = min(policy.backoff_base * 2.0**doublings, policy.backoff_max)
            jitter = policy.jitter
            self.retry_at = now + delay * rng.uniform(1 - jitter, 1 + jitter)

    def state(self, policy: PoolPolicy) -> ProxyState:
        failures = self.failures
        if failures >= policy.dead_after:
            return ProxyState.DEAD
        if failures >= policy.unhealthy_after:
            return ProxyState.UNHEALTHY
        if failures:
            return ProxyState.DEGRADED
        return ProxyState.HEALTHY if self.ever_ok else ProxyState.UNKNOWN

    def restore(
        self,
        failures: int,
        retry_at: float | None,
        ever_ok: bool,
        policy: PoolPolicy,
        now: float | None = None,
    ) -> None:
        """Overwrite with state learned elsewhere; ValueError if malformed.
        At most UNHEALTHY, benched no later than *now* + ``backoff_max``."""
        if not _is_count(failures, 0):
            raise ValueError("failures must be an integer >= 0")
        if retry_at is not None and not finite(retry_at):
            raise ValueError("retry_at must be a finite number or None")
        # Another process's failures bench a proxy, never kill it here: a
        # crawl closes for "no proxies left" only on failures it saw itself.
        # A dead one stays dead on a report that it is: with Redis, a
        # process hears its own reports too.
        if failures >= policy.dead_after <= self.failures:
            return
        self.failures = failures = min(failures, policy.dead_after - 1)
        benched = failures >= policy.unhealthy_after
        if benched and retry_at is not None:
            retry_at = float(retry_at)
            self.retry_at = (
                retry_at if now is None else min(retry_at, now + policy.backoff_max)
            )
        else:
            self.retry_at = None
        self.ever_ok = bool(ever_ok)
