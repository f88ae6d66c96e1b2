"""Tolerance (issue 14.2), the routing core alone: error scores in the store,
which verdicts burn a session and how long a tolerated retry waits, with a
fake clock. The crawls are in test_tolerance_crawl.py."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.routing.tolerance import (
    BACKOFF,
    OFF,
    REQUEST,
    RETRY_AFTER,
    SCORE,
    STALE,
    TOO_LONG,
    Tolerance,
    TolerancePolicy,
    Verdict,
    parse_retry_after,
)
from scrapy_sticky_proxy.state.memory import MemoryStore
from scrapy_sticky_proxy.state.redis_layout import key_digest
from scrapy_sticky_proxy.state.store import MAX_SCORE, HealthStore

from .test_redis_store import NS, opened, sync_client, within
from .test_router import Clock

K = "http://site/item/1"


def tolerance(
    n: int = 3, backoff: float = 1.0, wait_max: float = 10.0, **store: Any
) -> tuple[Tolerance, MemoryStore, Clock]:
    clock, memory = Clock(), MemoryStore(**store)
    policy = TolerancePolicy(n, backoff, wait_max)
    return Tolerance(policy, memory, clock), memory, clock


def test_a_tolerance_of_one_burns_at_the_first_verdict_and_keeps_no_score():
    assert StickyProxyConfig().tolerance == TolerancePolicy(1, 1.0, 60.0)
    tol, store, _ = tolerance(1)
    assert not tol.enabled
    assert tol.verdict(K, 0, None, b"1") == Verdict(True, OFF)
    tol.succeeded(K, 0)
    assert list(store.scores()) == []


def test_verdicts_below_the_tolerance_wait_a_doubling_backoff_then_burn():
    tol, store, _ = tolerance(3)
    assert tol.verdict(K, 0, 0) == Verdict(False, BACKOFF, 1.0)
    assert store.score(K, 0) == 1
    assert tol.verdict(K, 0, 1) == Verdict(False, BACKOFF, 2.0)
    assert tol.verdict(K, 0, 2) == Verdict(True, SCORE)
    # The router then burns it: the next generation starts with no score.
    store.ban(K, 0, 0.0)
    assert store.score(K, 1) == 0 and list(store.scores()) == []
    # A report of the burned generation arriving late burns nothing more.
    assert tol.verdict(K, 0, 0) == Verdict(True, STALE)
    assert store.score(K, 1) == 0


def test_the_backoff_never_exceeds_the_bound():
    tol, _, _ = tolerance(50, backoff=4.0, wait_max=10.0)
    waits = [tol.verdict(K, 0, None).seconds for _ in range(5)]
    assert waits == [4.0, 8.0, 10.0, 10.0, 10.0]


def test_successes_lower_the_score_but_one_request_is_spared_at_most_n_minus_1():
    tol, store, _ = tolerance(3)
    # Verdicts of different requests, each followed by a success: never
    # reaches 3.
    for _ in range(10):
        assert not tol.verdict(K, 0, 0).burn
        tol.succeeded(K, 0)
    assert store.score(K, 0) == 0
    tol.succeeded(K, 0)  # never below 0
    assert store.score(K, 0) == 0
    # One request that is always refused, while others succeed: its third
    # verdict burns the session whatever the score.
    assert not tol.verdict(K, 0, 0).burn
    tol.succeeded(K, 0)
    assert not tol.verdict(K, 0, 1).burn
    tol.succeeded(K, 0)
    assert tol.verdict(K, 0, 2) == Verdict(True, REQUEST)


@pytest.mark.parametrize("tried", [None, -1, True, "2", 2.0, float("nan"), [2]])
def test_a_tried_count_from_meta_that_is_no_count_counts_as_none(tried: Any):
    tol, _, _ = tolerance(3)
    assert not tol.verdict(K, 0, tried).burn


def test_retry_after_in_seconds_or_as_a_date_is_waited():
    tol, _, clock = tolerance(5)
    clock.now = 1_700_000_000.0
    assert tol.verdict(K, 0, 0, b"7") == Verdict(False, RETRY_AFTER, 7.0)
    date = formatdate(clock.now + 4, usegmt=True)  # an HTTP date
    assert tol.verdict(K, 0, 0, date.encode()) == Verdict(False, RETRY_AFTER, 4.0)
    past = formatdate(clock.now - 100, usegmt=True)
    assert tol.verdict(K, 0, 0, past) == Verdict(False, RETRY_AFTER, 0.0)
    # Longer than STICKY_PROXY_RETRY_AFTER_MAX: the session is no use for
    # that long; it burns now instead of being asked again too early.
    assert tol.verdict(K, 0, 0, b"11") == Verdict(True, TOO_LONG)
    assert tol.verdict(K, 0, 0, formatdate(clock.now + 3600).encode()).burn


@pytest.mark.parametrize(
    "value",
    [b"", b"soon", b"-1", b"1.5", b"1e3", b" 0x10", "\u0661".encode(), b"9" * 100,
     b"Mon, 99 Foo 2024 99:99:99 GMT", b"\xff\xfe", 3, None],
    ids=repr,
)  # fmt: skip
def test_a_retry_after_that_is_not_one_falls_back_to_the_backoff(value: Any):
    assert parse_retry_after(value, 1_700_000_000.0) is None
    tol, _, _ = tolerance(3)
    assert tol.verdict(K, 0, 0, value) == Verdict(False, BACKOFF, 1.0)


def test_parse_retry_after_reads_what_servers_send():
    now = 1_700_000_000.0
    assert parse_retry_after(b" 120 ", now) == 120.0
    assert parse_retry_after(b"0", now) == 0.0
    assert parse_retry_after(b"99999999999999999999", now) == 1e9  # bounded
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    # Not GMT: the zone is read; "-0000" is UTC.
    assert parse_retry_after(formatdate(now + 30, localtime=True), now) == 30.0
    assert parse_retry_after(formatdate(now + 30)[:-5] + "-0000", now) == 30.0


def test_the_wait_in_meta_is_bounded_and_garbage_waits_nothing():
    tol, _, clock = tolerance(3, wait_max=10.0)
    assert tol.remaining(tol.deadline(2.5)) == 2.5
    clock.advance(1.0)
    assert tol.remaining(tol.deadline(2.5) - 1.0) == 1.5
    assert tol.remaining(clock.now + 1e9) == 10.0  # another process's clock
    for bad in (None, "1", True, float("nan"), float("inf"), [1], clock.now - 5):
        assert tol.remaining(bad) == 0.0


def test_a_store_that_keeps_no_scores_burns_at_every_verdict():
    class Bare(HealthStore):
        def acquire(self, key: str, now: float) -> tuple[int, bool]:
            return 0, False

        def generation(self, key: str) -> int:
            return 0

        def ban(self, key: str, generation: int, now: float) -> int:
            return generation + 1

        def record_give_up(self, record: dict[str, Any]) -> None:
            pass

        def __len__(self) -> int:
            return 0

    tol = Tolerance(TolerancePolicy(3), Bare())
    assert tol.verdict(K, 0, 0) == Verdict(True, SCORE)


def test_scores_are_bounded_like_keys_and_capped():
    _, store, _ = tolerance(3, max_keys=10)
    for i in range(100):
        store.add_score(f"k{i}", 0, 1, 0.0)
    assert len(list(store.scores())) == 10
    assert store.score("k99", 0) == 1 and store.score("k0", 0) == 0
    for _ in range(MAX_SCORE + 5):
        store.add_score("k99", 0, 1, 0.0)
    assert store.score("k99", 0) == MAX_SCORE
    # A score of an older generation than the key's is not applied.
    store.set_generation("k98", 2, 0.0)
    store.set_score("k98", 1, 5)
    assert store.score("k98", 1) == 0 and store.score("k98", 2) == 0


# -- shared through Redis ------------------------------------------------------


@deferred_f_from_coro_f
async def test_scores_are_shared_through_redis_and_what_is_not_one_is_skipped(
    redis_db: str,
) -> None:
    client = sync_client(redis_db)
    # Values someone else wrote under ns:e:, skipped at load, never applied.
    client.set(f"{NS}:e:{key_digest('big')}", f"0 {MAX_SCORE + 1}")
    client.set(f"{NS}:e:{key_digest('text')}", "x")
    client.set(f"{NS}:e:not-a-digest", "0 1")
    async with opened(redis_db) as a, opened(redis_db) as b:
        assert (a.score("big", 0), a.score("text", 0)) == (0, 0)
        assert a.add_score(K, 0, 1, 0.0) == 1
        assert a.add_score(K, 0, 1, 0.0) == 2
        a.add_score("text", 0, 1, 0.0)  # the script leaves "x" alone
        for bad in (f"e {key_digest(K)} 0 {MAX_SCORE + 1}", "e zz 0 1", "e x"):
            client.publish(f"{NS}:events", bad)
        a.ban("sync", 0, 0.0)  # published after the scores: b has them then
        await within(b.wait_generation("sync", 1))
        assert b.score(K, 0) == 2 and b.score(K, 1) == 0
        # A success in b lowers it for a too.
        tolerance_b = Tolerance(TolerancePolicy(3), b)
        tolerance_b.succeeded(K, 0)
        b.ban("sync", 1, 0.0)
        await within(a.wait_generation("sync", 2))
        assert a.score(K, 0) == 1
        assert client.get(f"{NS}:e:{key_digest(K)}") == "0 1"
        assert 0 < client.ttl(f"{NS}:e:{key_digest(K)}") <= 86400
        # Burned in a (the key moves on): its score goes in b too.
        a.ban(K, 0, 0.0)
        await within(b.wait_generation(K, 1))
        assert b.score(K, 0) == 0
        assert tolerance_b.verdict(K, 0, 0) == Verdict(True, STALE)
        await within(a.flushed())
        skipped_a, skipped_b = a.counters(), b.counters()
    # a: 3 at load, the refused change, 3 events; b: 3 at load, 3 events.
    assert skipped_a["redis/skipped/score"] == 7, skipped_a
    assert skipped_b["redis/skipped/score"] == 6, skipped_b
    assert client.get(f"{NS}:e:{key_digest('text')}") == "x"
