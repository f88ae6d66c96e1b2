from __future__ import annotations

import json

import pytest

from scrapy_sticky_proxy.state.memory import MemoryStore
from scrapy_sticky_proxy.state.store import Rotation


def test_unbanned_keys_take_no_memory() -> None:
    store = MemoryStore()
    assert store.acquire("a", 0.0) == (0, False)
    assert len(store) == 0


def test_ban_bumps_once_per_generation() -> None:
    store = MemoryStore()
    assert store.ban("a", 0, 0.0) == 1
    # A second report of the same (key, gen) ban, e.g. from a follow-up that
    # was in flight on the same session, does not skip a generation.
    assert store.ban("a", 0, 0.0) == 1
    assert store.acquire("a", 1.0) == (1, False)
    assert store.ban("a", 1, 1.0) == 2
    assert store.generation("a") == 2
    assert store.generation("b") == 0


def test_lru_cap_forgets_least_recently_used() -> None:
    store = MemoryStore(max_keys=2)
    store.ban("a", 0, 0.0)
    store.ban("b", 0, 0.0)
    store.acquire("a", 1.0)  # a is now more recent than b
    store.ban("c", 0, 2.0)
    assert len(store) == 2
    assert store.generation("a") == 1
    assert store.generation("b") == 0
    assert store.evicted == 1


def test_rotation_by_uses() -> None:
    store = MemoryStore(rotation=Rotation(max_uses=2))
    assert [store.acquire("k", 0.0) for _ in range(5)] == [
        (0, False),
        (0, False),
        (1, True),
        (1, False),
        (2, True),
    ]


def test_rotation_by_age() -> None:
    store = MemoryStore(rotation=Rotation(max_age=10.0))
    assert store.acquire("k", 0.0) == (0, False)
    assert store.acquire("k", 9.9) == (0, False)
    assert store.acquire("k", 10.0) == (1, True)
    assert store.acquire("k", 19.0) == (1, False)
    # A ban restarts the clock of the new generation.
    store.ban("k", 1, 19.5)
    assert store.acquire("k", 29.0) == (2, False)


def test_set_generation_only_moves_forward() -> None:
    store = MemoryStore()
    store.set_generation("k", 3, 0.0)
    store.set_generation("k", 2, 0.0)
    assert store.generation("k") == 3


def test_give_up_file(tmp_path) -> None:
    path = tmp_path / "gave_up.jsonl"
    store = MemoryStore(gave_up_file=str(path))
    store.record_give_up({"url": "http://a/é", "reasons": ["status/403"]})
    store.record_give_up({"url": "http://b/"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["url"] for line in lines] == ["http://a/é", "http://b/"]


def test_bad_cap() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)
