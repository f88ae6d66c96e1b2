"""Static proxy list: sticky, deterministic picks among the usable proxies.

Weighted rendezvous hashing: for a key, each proxy scores ``-w / ln(u)``, ``u``
in (0, 1) from ``blake2b(f"{id}\\0{key}\\0" "0", digest_size=8)``; ranked by
score, generation ``g`` takes the first usable proxy from place ``g mod n`` on
(generation 0: the highest-scoring usable one). Same answer in every process
and run, shares follow weights, consecutive generations of a key never prefer
the same proxy, and benching a proxy moves only its own keys (back when it
recovers). ``pick`` is O(n) proxies with one blake2b copy and one log each
(plus a sort from generation 1); ``snapshot``, ``counts``, ``all_dead`` O(n);
the rest O(1). Each proxy's health (failures, backoff, states) is kept by
:mod:`.health`. Messages never hold proxy ids, which are often URLs with
credentials.

Pure logic: time is the ``now`` argument (seconds), jitter an injected Random.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Sequence

from .._numbers import finite
from .health import PoolPolicy, ProxyHealth, ProxyState

# u = (top 52 bits + 0.5) / 2**52 is exact in a double and strictly inside (0, 1).
_U_SHIFT = 64 - 52
_U_SCALE = 2.0**-52
_DEFAULT_POLICY = PoolPolicy()


def _encode(text: str) -> bytes:
    # surrogatepass: a key built from a badly decoded URL must still hash.
    return text.encode("utf-8", "surrogatepass")


class _Proxy(ProxyHealth):
    """One proxy of the pool: its health, id, weight and hash state."""

    __slots__ = ("hasher", "proxy_id", "weight")

    def __init__(self, proxy_id: str, weight: float) -> None:
        super().__init__()
        self.proxy_id = proxy_id
        self.weight = weight
        # Hash state after "{proxy_id}\0"; pick() copies it and adds the key.
        self.hasher = hashlib.blake2b(_encode(proxy_id + "\x00"), digest_size=8)


class ProxyPool:
    """Sticky proxy choice per session key, with health tracking and backoff.

    At least one id, all unique non-empty strings; weights (default 1.0) are
    positive and finite; else ValueError. An id not in the pool: KeyError.
    """

    def __init__(
        self,
        proxy_ids: Sequence[str],
        weights: Sequence[float] | None = None,
        policy: PoolPolicy = _DEFAULT_POLICY,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(proxy_ids, str) or not proxy_ids:
            raise ValueError("proxy_ids must be a non-empty sequence of strings")
        if weights is None:
            weights = [1.0] * len(proxy_ids)
        if len(weights) != len(proxy_ids):
            raise ValueError(f"{len(weights)} weights for {len(proxy_ids)} proxies")
        self._policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._proxies: list[_Proxy] = []
        self._by_id: dict[str, _Proxy] = {}
        for index, proxy_id in enumerate(proxy_ids):
            weight = weights[index]
            if not isinstance(proxy_id, str) or not proxy_id:
                raise ValueError(f"proxy #{index}: id must be a non-empty string")
            if proxy_id in self._by_id:
                raise ValueError(f"proxy #{index}: duplicate id")
            if not finite(weight) or weight <= 0:
                raise ValueError(f"proxy #{index}: weight must be positive and finite")
            self._by_id[proxy_id] = proxy = _Proxy(proxy_id, float(weight))
            self._proxies.append(proxy)

    @property
    def policy(self) -> PoolPolicy:
        """The thresholds and backoff timing in force."""
        return self._policy

    @property
    def proxy_ids(self) -> tuple[str, ...]:
        """The proxy ids, in the order given."""
        return tuple(proxy.proxy_id for proxy in self._proxies)

    def pick(
        self,
        key: str,
        generation: int,
        now: float,
        avoid: str | Collection[str] = (),
    ) -> str | None:
        """The proxy for ``(key, generation)``, skipping the one or ones in
        ``avoid`` if another is usable. With none usable, the non-DEAD one
        whose ``retry_at`` is soonest (better than stalling), else None.

        Generation ``g`` prefers the proxy at place ``g mod n`` of the key's
        ranking, and walks down the ranking past benched ones. A key is
        re-rolled because its exit was banned, so consecutive generations
        never prefer the same proxy: the re-rolled request and the key's
        follow-ups agree on leaving it, with no memory of where a ban came
        from."""
        if isinstance(avoid, str):
            avoid = (avoid,)
        proxies = self._proxies
        scores = [self._score(proxy, key) for proxy in proxies]
        start = generation % len(proxies)
        if start == 0:
            order: Sequence[int] = range(len(proxies))
            best = self._best_usable(scores, order, now, avoid, by_score=True)
        else:
            ranked = sorted(range(len(proxies)), key=scores.__getitem__, reverse=True)
            order = ranked[start:] + ranked[:start]
            best = self._best_usable(scores, order, now, avoid, by_score=False)
        if best is None and avoid:
            # Only avoided proxies may be usable: better than stalling.
            best = self._best_usable(scores, order, now, (), by_score=start == 0)
        if best is None:
            best = self._soonest_retry(avoid)
        return None if best is None else best.proxy_id

    def _score(self, proxy: _Proxy, key: str) -> float:
        hasher = proxy.hasher.copy()
        # The "\0" + "0" suffix is generation 0's: picks made before
        # generations walked the ranking stay where they were.
        hasher.update(_encode(f"{key}\x000"))
        digest = int.from_bytes(hasher.digest(), "big")
        u = ((digest >> _U_SHIFT) + 0.5) * _U_SCALE
        return -proxy.weight / math.log(u)

    def _best_usable(
        self,
        scores: list[float],
        order: Sequence[int],
        now: float,
        avoid: Collection[str],
        by_score: bool,
    ) -> _Proxy | None:
        """The first usable proxy (not benched at *now*, not in *avoid*) in
        *order*, or the highest-scoring one when *by_score*."""
        best: _Proxy | None = None
        best_score = 0.0  # every score is > 0
        for index in order:
            proxy = self._proxies[index]
            retry_at = proxy.retry_at
            if (retry_at is not None and now < retry_at) or proxy.proxy_id in avoid:
                continue
            if not by_score:
                return proxy
            if scores[index] > best_score:
                best, best_score = proxy, scores[index]
        return best

    def _soonest_retry(self, avoid: Collection[str]) -> _Proxy | None:
        benched = [p for p in self._proxies if p.failures < self._policy.dead_after]
        preferred = [p for p in benched if p.proxy_id not in avoid] or benched
        # All are benched here, so retry_at is set; ties go to list order.
        return min(preferred, key=lambda p: p.retry_at or 0.0, default=None)

    def usable(self, proxy_id: str, now: float) -> bool:
        """Whether ``pick`` may choose this proxy at ``now`` (not benched)."""
        return not self._get(proxy_id).benched(now)

    def success(self, proxy_id: str, now: float) -> None:
        """A request through this proxy succeeded: it becomes HEALTHY."""
        self._get(proxy_id).succeed()

    def failure(self, proxy_id: str, now: float, probe: bool = False) -> ProxyState:
        """A request through this proxy failed (ignored while benched, unless
        it was the *probe*: the one request sent to find out whether the
        proxy is back, whose failure is news)."""
        proxy = self._get(proxy_id)
        proxy.fail(now, self._policy, self._rng, probe)
        return proxy.state(self._policy)

    def state(self, proxy_id: str, now: float) -> ProxyState:
        """Health of one proxy (from counts only; :meth:`usable` looks at ``now``)."""
        return self._get(proxy_id).state(self._policy)

    def snapshot(self, now: float) -> dict[str, ProxyState]:
        """Every proxy's state, in list order."""
        return {proxy.proxy_id: proxy.state(self._policy) for proxy in self._proxies}

    def counts(self, now: float) -> dict[ProxyState, int]:
        """How many proxies are in each state; every state is a key."""
        counts = dict.fromkeys(ProxyState, 0)
        for proxy in self._proxies:
            counts[proxy.state(self._policy)] += 1
        return counts

    def all_dead(self, now: float) -> bool:
        """True when every proxy is DEAD, even if some are on probation."""
        dead_after = self._policy.dead_after
        return all(proxy.failures >= dead_after for proxy in self._proxies)

    def restore(
        self,
        proxy_id: str,
        failures: int,
        retry_at: float | None,
        ever_ok: bool,
        now: float | None = None,
    ) -> None:
        """Overwrite one proxy's health with state learned elsewhere.

        The inverse of :meth:`export`, except that it never makes a proxy
        DEAD (another process's failures bench it here: ``failures`` is
        capped at ``dead_after - 1``) and, given *now*, benches it no later
        than ``now + backoff_max``. ``retry_at`` is on the ``now`` clock, so
        processes sharing state must use wall-clock time. It is dropped when
        ``failures < unhealthy_after``; a higher count without it is probation.
        """
        self._get(proxy_id).restore(failures, retry_at, ever_ok, self._policy, now)

    def export(self, proxy_id: str) -> tuple[int, float | None, bool]:
        """``(failures, retry_at, ever_ok)`` of one proxy; see :meth:`restore`."""
        proxy = self._get(proxy_id)
        return proxy.failures, proxy.retry_at, proxy.ever_ok

    def _get(self, proxy_id: str) -> _Proxy:
        try:
            return self._by_id[proxy_id]
        except KeyError:
            # The id may hold credentials: keep it out of the exception.
            raise KeyError("proxy not in this pool") from None
