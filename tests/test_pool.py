"""Tests for the pure proxy pool: rendezvous picks and the health state machine."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_sticky_proxy.routing.health import PoolPolicy, ProxyState
from scrapy_sticky_proxy.routing.pool import ProxyPool

from .conftest import assert_absent

PROXIES = [f"http://user:secret@10.0.0.{i}:8080" for i in range(1, 6)]
KEYS = [f"https://example.com/item/{i}" for i in range(2000)]
# No jitter, small numbers: every retry_at in the state machine tests is exact.
EXACT = PoolPolicy(
    unhealthy_after=2, dead_after=5, backoff_base=10.0, backoff_max=40.0, jitter=0
)


def make_pool(
    ids: list[str] = PROXIES, policy: PoolPolicy = EXACT, seed: int = 1
) -> ProxyPool:
    return ProxyPool(ids, policy=policy, rng=random.Random(seed))


def bench(pool: ProxyPool, proxy_id: str, now: float) -> None:
    for _ in range(pool.policy.unhealthy_after):
        pool.failure(proxy_id, now)
    assert not pool.usable(proxy_id, now)


def kill(pool: ProxyPool, proxy_id: str, now: float) -> float:
    """Fail a proxy until DEAD, waiting out each backoff; returns the time."""
    while pool.state(proxy_id, now) is not ProxyState.DEAD:
        _, retry_at, _ = pool.export(proxy_id)
        now = max(now, retry_at or now)
        pool.failure(proxy_id, now)
    return now


# -- picks ------------------------------------------------------------------


def test_picks_are_deterministic_across_pools() -> None:
    first, second = make_pool(seed=1), make_pool(seed=2)
    picks = [first.pick(key, 0, 0.0) for key in KEYS[:1000]]
    assert picks == [second.pick(key, 0, 0.0) for key in KEYS[:1000]]


def reference_pick(ids: list[str], weights: list[float], key: str, gen: int) -> str:
    """The documented formula, written out independently of the pool."""

    def score(proxy_id: str, weight: float) -> float:
        data = f"{proxy_id}\x00{key}\x000".encode()
        digest = hashlib.blake2b(data, digest_size=8).digest()
        u = ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52
        return -weight / math.log(u)

    pairs = zip(ids, weights, strict=True)
    ranked = sorted(pairs, key=lambda pair: score(*pair), reverse=True)
    return ranked[gen % len(ids)][0]


def test_picks_follow_the_documented_formula() -> None:
    weights = [1.0, 2.0, 3.0, 1.0, 0.5]
    pool = ProxyPool(PROXIES, weights)
    for key in KEYS[:1000]:
        for gen in (0, 7):
            assert pool.pick(key, gen, 0.0) == reference_pick(
                PROXIES, weights, key, gen
            )


def test_picks_are_stable_across_versions_and_processes() -> None:
    # Golden values: they change only if the hash input or mapping changes,
    # which would move every key of every deployed crawl. Generation 0 is as
    # in 0.1.0; generation 1 changed in 0.2.0 (it walks the key's ranking).
    pool = make_pool(["a", "b", "c", "d"])
    picks = [pool.pick(f"key{i}", gen, 0.0) for i in range(6) for gen in (0, 1)]
    assert picks == ["c", "a", "d", "a", "d", "b", "d", "a", "a", "b", "a", "b"]


def test_equal_weights_spread_evenly() -> None:
    pool = make_pool(["a", "b", "c", "d"])
    counts = Counter(pool.pick(f"key{i}", 0, 0.0) for i in range(10_000))
    assert set(counts) == {"a", "b", "c", "d"}
    for count in counts.values():
        assert 2000 <= count <= 3000


def test_shares_follow_weights() -> None:
    pool = ProxyPool(["light", "heavy"], weights=[1.0, 3.0])
    counts = Counter(pool.pick(f"key{i}", 0, 0.0) for i in range(10_000))
    assert 0.72 <= counts["heavy"] / 10_000 <= 0.78


def test_benching_a_proxy_moves_only_its_keys_and_they_come_back() -> None:
    pool = make_pool()
    before = {key: pool.pick(key, 0, 0.0) for key in KEYS}
    victim = PROXIES[2]
    bench(pool, victim, 100.0)
    during = {key: pool.pick(key, 0, 101.0) for key in KEYS}
    moved = {key for key in KEYS if during[key] != before[key]}
    assert moved == {key for key in KEYS if before[key] == victim}
    assert 300 <= len(moved) <= 500  # about a fifth
    assert victim not in during.values()
    # Recovery by time (probation) and by a success both restore every key.
    _, retry_at, _ = pool.export(victim)
    assert retry_at is not None
    assert {key: pool.pick(key, 0, retry_at) for key in KEYS} == before
    pool.success(victim, 102.0)
    assert {key: pool.pick(key, 0, 102.0) for key in KEYS} == before


@settings(max_examples=50, deadline=None)
@given(benched=st.sets(st.sampled_from(PROXIES), max_size=4))
def test_any_benched_subset_moves_only_its_keys(benched: set[str]) -> None:
    pool = make_pool()
    before = {key: pool.pick(key, 0, 0.0) for key in KEYS[:300]}
    for proxy_id in benched:
        bench(pool, proxy_id, 0.0)
    for key, old in before.items():
        new = pool.pick(key, 0, 1.0)
        assert new not in benched
        assert (new == old) == (old not in benched)


@pytest.mark.parametrize("ids", [PROXIES, PROXIES[:3], PROXIES[:2]])
def test_a_new_generation_leaves_the_proxy_of_the_last_one(ids: list[str]) -> None:
    # The re-rolled request and the key's follow-ups agree on leaving the
    # proxy that banned the last generation, with no memory of the ban.
    pool = make_pool(ids)
    for key in KEYS[:500]:
        picks = [pool.pick(key, gen, 0.0) for gen in range(6)]
        assert all(a != b for a, b in itertools.pairwise(picks)), key


def test_avoid_is_honoured_while_another_proxy_is_usable() -> None:
    pool = make_pool()
    for key in KEYS[:200]:
        first = pool.pick(key, 0, 0.0)
        assert first is not None
        second = pool.pick(key, 0, 0.0, avoid=first)
        assert second not in (None, first)
        # Avoiding a proxy the key is not on changes nothing.
        other = next(p for p in PROXIES if p != first)
        assert pool.pick(key, 0, 0.0, avoid=other) == first


def test_avoid_yields_when_it_is_the_only_usable_proxy() -> None:
    pool = make_pool()
    for proxy_id in PROXIES[1:]:
        bench(pool, proxy_id, 0.0)
    assert pool.pick("k", 0, 1.0, avoid=PROXIES[0]) == PROXIES[0]


def test_keys_with_odd_characters_hash() -> None:
    pool = make_pool()
    for key in ["", "\x00", "é@:/ \r\n", "\udcff", "x" * 10_000]:
        assert pool.pick(key, 0, 0.0) in PROXIES


# -- state machine ----------------------------------------------------------


def test_state_machine_walk() -> None:
    pool = make_pool()
    p = PROXIES[0]
    assert pool.state(p, 0.0) is ProxyState.UNKNOWN
    assert pool.export(p) == (0, None, False)
    pool.success(p, 1.0)
    assert pool.state(p, 1.0) is ProxyState.HEALTHY
    assert pool.failure(p, 2.0) is ProxyState.DEGRADED
    assert pool.usable(p, 2.0)
    assert pool.export(p) == (1, None, True)
    assert pool.failure(p, 3.0) is ProxyState.UNHEALTHY
    assert pool.export(p) == (2, 13.0, True)  # 3 + backoff_base
    assert not pool.usable(p, 12.9)
    # A late report from a request in flight neither counts nor extends.
    assert pool.failure(p, 5.0) is ProxyState.UNHEALTHY
    assert pool.export(p) == (2, 13.0, True)
    # Probation from retry_at on; its failure doubles the backoff.
    assert pool.usable(p, 13.0)
    assert pool.state(p, 13.0) is ProxyState.UNHEALTHY
    assert pool.failure(p, 14.0) is ProxyState.UNHEALTHY
    assert pool.export(p) == (3, 34.0, True)  # 14 + 2 * 10
    assert pool.failure(p, 34.0) is ProxyState.UNHEALTHY
    assert pool.export(p) == (4, 74.0, True)  # 34 + 4 * 10 (== backoff_max)
    # A success on probation heals completely.
    pool.success(p, 74.0)
    assert pool.state(p, 74.0) is ProxyState.HEALTHY
    assert pool.export(p) == (0, None, True)


def test_backoff_doubles_up_to_backoff_max() -> None:
    policy = PoolPolicy(
        unhealthy_after=1, dead_after=10, backoff_base=10, backoff_max=40, jitter=0
    )
    pool = ProxyPool(["p"], policy=policy)
    now = 0.0
    for expected in [10.0, 20.0, 40.0, 40.0, 40.0]:
        assert pool.failure("p", now) is ProxyState.UNHEALTHY
        assert pool.export("p")[1] == now + expected
        now += expected


def test_jittered_backoff_stays_within_bounds() -> None:
    policy = PoolPolicy(
        unhealthy_after=1, dead_after=20, backoff_base=30, backoff_max=1800
    )
    pool = ProxyPool(["p"], policy=policy, rng=random.Random(7))
    now = 0.0
    delays = []
    for failures in range(1, 19):
        pool.failure("p", now)
        _, retry_at, _ = pool.export("p")
        assert retry_at is not None
        delay = retry_at - now
        nominal = min(30 * 2 ** (failures - 1), 1800)
        assert nominal * 0.75 <= delay <= nominal * 1.25
        delays.append(delay / nominal)
        now = retry_at
    assert len(set(delays)) == len(delays)  # jitter is really applied
    assert min(delays) < 0.95 and max(delays) > 1.05


def test_same_seed_same_jitter() -> None:
    def retry_at(seed: int) -> float | None:
        pool = ProxyPool(["p"], rng=random.Random(seed))
        for _ in range(3):
            pool.failure("p", 0.0)
        return pool.export("p")[1]

    assert retry_at(3) == retry_at(3)
    assert retry_at(3) != retry_at(4)


def test_dead_after_dead_after_and_recovery_after_backoff_max() -> None:
    pool = make_pool()
    p = PROXIES[0]
    now = kill(pool, p, 0.0)
    assert pool.export(p)[0] == EXACT.dead_after
    assert pool.export(p)[1] == now + EXACT.backoff_max
    assert not pool.usable(p, now + 39.9)
    # Probation after backoff_max: usable, still DEAD until a success.
    assert pool.usable(p, now + 40.0)
    assert pool.state(p, now + 40.0) is ProxyState.DEAD
    assert pool.failure(p, now + 40.0) is ProxyState.DEAD
    assert pool.export(p)[1] == now + 80.0
    pool.success(p, now + 80.0)
    assert pool.state(p, now + 80.0) is ProxyState.HEALTHY


def test_all_unhealthy_picks_soonest_retry_and_all_dead_picks_none() -> None:
    ids = ["a", "b", "c"]
    pool = make_pool(ids)
    for proxy_id, now in [("b", 0.0), ("a", 1.0), ("c", 2.0)]:
        bench(pool, proxy_id, now)
    assert pool.counts(3.0)[ProxyState.UNHEALTHY] == 3
    assert not pool.all_dead(3.0)
    for key in KEYS[:50]:
        assert pool.pick(key, 0, 3.0) == "b"
        assert pool.pick(key, 0, 3.0, avoid="b") == "a"
    # Time passes: b is on probation, so normal picks resume for b alone.
    assert pool.pick("k", 0, 10.0) == "b"

    dead = make_pool(ids)
    now = max(kill(dead, proxy_id, 0.0) for proxy_id in ids)
    assert dead.all_dead(now)
    assert dead.pick("k", 0, now) is None
    # Their backoff over, they are on probation: picked again, but still
    # counted as dead until one succeeds.
    later = now + EXACT.backoff_max
    assert dead.pick("k", 0, later) is not None
    assert dead.all_dead(later)
    dead.success("a", later)
    assert not dead.all_dead(later)


def test_snapshot_and_counts() -> None:
    pool = make_pool(["a", "b", "c", "d", "e"])
    pool.success("b", 0.0)
    pool.failure("c", 0.0)
    bench(pool, "d", 0.0)
    kill(pool, "e", 0.0)
    expected = {
        "a": ProxyState.UNKNOWN,
        "b": ProxyState.HEALTHY,
        "c": ProxyState.DEGRADED,
        "d": ProxyState.UNHEALTHY,
        "e": ProxyState.DEAD,
    }
    assert pool.snapshot(0.0) == expected
    assert tuple(pool.snapshot(0.0)) == pool.proxy_ids == ("a", "b", "c", "d", "e")
    assert pool.counts(0.0) == dict.fromkeys(ProxyState, 1)
    assert {state.value for state in ProxyState} == {
        "unknown",
        "healthy",
        "degraded",
        "unhealthy",
        "dead",
    }


def test_burst_of_concurrent_failures_does_not_kill() -> None:
    pool = ProxyPool(["p", "q"], rng=random.Random(0))  # default policy
    states = {pool.failure("p", 0.0) for _ in range(50)}
    assert states == {ProxyState.DEGRADED, ProxyState.UNHEALTHY}
    assert pool.export("p")[0] == 3


# -- restore / export -------------------------------------------------------


@pytest.mark.parametrize(
    "exported",
    [
        (0, None, False),
        (0, None, True),
        (1, None, True),
        (2, 55.5, False),
        (4, 70.0, True),
    ],
)
def test_restore_export_round_trip(exported: tuple[int, float | None, bool]) -> None:
    source, target = make_pool(), make_pool()
    source.restore(PROXIES[0], *exported)
    assert source.export(PROXIES[0]) == exported
    target.restore(PROXIES[0], *source.export(PROXIES[0]))
    assert target.export(PROXIES[0]) == exported
    assert target.snapshot(0.0) == source.snapshot(0.0)


def test_restore_copies_a_whole_pool() -> None:
    source = make_pool()
    bench(source, PROXIES[1], 0.0)
    kill(source, PROXIES[2], 0.0)
    source.success(PROXIES[3], 0.0)
    target = make_pool(seed=99)
    for proxy_id in source.proxy_ids:
        target.restore(proxy_id, *source.export(proxy_id))
    for now in (0.0, 5.0, 1000.0):
        # Dead here only by this process's own failures (below).
        assert target.snapshot(now) == {
            **source.snapshot(now),
            PROXIES[2]: ProxyState.UNHEALTHY,
        }
        assert [target.pick(k, 0, now) for k in KEYS[:200]] == [
            source.pick(k, 0, now) for k in KEYS[:200]
        ]


@pytest.mark.parametrize("exported", [(5, 99.0, True), (9, None, False)])
def test_restore_never_makes_a_proxy_dead(
    exported: tuple[int, float | None, bool],
) -> None:
    """Another process's failures (or anyone's value in Redis) bench a
    proxy; only this process's own failures make it dead."""
    pool = make_pool([PROXIES[0]])
    pool.restore(PROXIES[0], *exported)
    assert pool.export(PROXIES[0]) == (EXACT.dead_after - 1, *exported[1:])
    assert pool.state(PROXIES[0], 0.0) is ProxyState.UNHEALTHY
    assert not pool.all_dead(0.0)
    assert pool.pick("k", 0, 0.0) == PROXIES[0]
    pool.failure(PROXIES[0], 0.0, probe=True)
    assert pool.all_dead(0.0)


def test_its_own_dead_verdict_heard_back_stands() -> None:
    """With Redis, a process hears its own reports: its own dead proxy came
    back, capped as another's report is, and alive again (the crawl then
    waited a backoff more before closing for no proxies left). A report
    that the proxy answers still revives it."""
    pool = make_pool([PROXIES[0]])
    now = kill(pool, PROXIES[0], 0.0)
    assert pool.all_dead(now)
    pool.restore(PROXIES[0], *pool.export(PROXIES[0]), now=now)
    assert pool.all_dead(now)
    pool.restore(PROXIES[0], 0, None, True, now=now)
    assert not pool.all_dead(now)


def test_restore_benches_no_longer_than_backoff_max() -> None:
    pool = make_pool()
    pool.restore(PROXIES[0], 3, 10_000.0, True, now=100.0)
    assert pool.export(PROXIES[0]) == (3, 100.0 + EXACT.backoff_max, True)
    pool.restore(PROXIES[1], 3, 120.0, True, now=100.0)
    assert pool.export(PROXIES[1]) == (3, 120.0, True)


def test_restore_drops_retry_at_below_unhealthy() -> None:
    pool = make_pool()
    pool.restore(PROXIES[0], 1, 50.0, True)
    assert pool.export(PROXIES[0]) == (1, None, True)
    assert pool.usable(PROXIES[0], 0.0)


@pytest.mark.parametrize(
    ("failures", "retry_at"),
    [(-1, None), (1.5, None), (True, None), (3, float("nan")), (3, float("inf"))],
)
def test_restore_rejects_bad_values(failures: int, retry_at: float | None) -> None:
    with pytest.raises(ValueError):
        make_pool().restore(PROXIES[0], failures, retry_at, True)


def test_unknown_proxy_raises_without_leaking_the_id() -> None:
    pool = make_pool()
    secret_id = "http://user:hunter2@1.2.3.4:8080"
    for call in (
        lambda: pool.failure(secret_id, 0.0),
        lambda: pool.success(secret_id, 0.0),
        lambda: pool.state(secret_id, 0.0),
        lambda: pool.export(secret_id),
        lambda: pool.restore(secret_id, 0, None, False),
    ):
        with pytest.raises(KeyError) as info:
            call()
        assert_absent("hunter2", str(info.value))


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "weights"),
    [
        ([], None),
        ("abc", None),
        (["a", ""], None),
        (["a", "a"], None),
        (["a", 3], None),
        (["a", "b"], [1.0]),
        (["a", "b"], [1.0, 0.0]),
        (["a", "b"], [1.0, -2.0]),
        (["a", "b"], [1.0, float("nan")]),
        (["a", "b"], [1.0, float("inf")]),
    ],
)
def test_bad_pool_arguments(ids: list[str], weights: list[float] | None) -> None:
    with pytest.raises(ValueError):
        ProxyPool(ids, weights)


def test_duplicate_id_error_does_not_leak_the_id() -> None:
    with pytest.raises(ValueError) as info:
        ProxyPool(["http://u:hunter2@h:1", "http://u:hunter2@h:1"])
    assert_absent("hunter2", str(info.value))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"unhealthy_after": 0},
        {"unhealthy_after": 2.5},
        {"unhealthy_after": 5, "dead_after": 5},
        {"dead_after": 2},
        {"backoff_base": 0},
        {"backoff_base": -1},
        {"backoff_max": float("inf")},
        {"backoff_base": 100, "backoff_max": 50},
        {"jitter": -0.1},
        {"jitter": 1.0},
        {"jitter": float("nan")},
    ],
)
def test_bad_policy(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PoolPolicy(**kwargs)  # type: ignore[arg-type]


def test_default_policy() -> None:
    assert PoolPolicy() == PoolPolicy(3, 12, 30.0, 1800.0, 0.25)
    assert ProxyPool(["a"]).policy == PoolPolicy()
