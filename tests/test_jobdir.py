"""Pause and resume with JOBDIR (issue 14, part 4): the memory store's
state written at the end of a run and read at the start of the next.

The snapshot alone (round trip, bound, atomic write, hostile files) with a
fake clock, then two crawls through the sandbox: one paused by
CLOSESPIDER_ITEMCOUNT after bans and resumed against a site that bans any
reuse of a burned exit, and one whose state file cannot be read or written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.sandbox import RememberBans, Sandbox, ban_all
from scrapy_sticky_proxy.state import snapshot
from scrapy_sticky_proxy.state.memory import MemoryStore
from scrapy_sticky_proxy.state.redis_layout import key_digest
from scrapy_sticky_proxy.state.store import Rotation

from .conftest import crawl, records
from .spiders import ItemsSpider
from .test_crawl import settings_for

SCOPE = snapshot.scope_of("ns", "generic", "127.0.0.1:8000")
PARTS = ("page", "detail", "media", "thumb")


def saved(
    store: MemoryStore, path: Path, now: float = 50.0, wall: float = 1000.0
) -> int:
    return snapshot.save(str(path), store.export(now), SCOPE, wall)


def loaded(path: Path, max_keys: int = 100, wall: float = 1000.0) -> snapshot.Loaded:
    result = snapshot.load(str(path), SCOPE, max_keys, wall)
    assert result is not None
    return result


def test_generations_survive_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILENAME
    store = MemoryStore()
    store.ban("http://a/1", 0, 1.0)
    store.ban("http://b/2", 0, 1.0)
    store.ban("http://b/2", 1, 2.0)
    store.acquire("http://c/3", 3.0)  # never banned: nothing to keep
    assert saved(store, path) == 2
    text = path.read_text()
    assert "http" not in text  # keys are digests, never the key itself

    fresh = MemoryStore()
    file = loaded(path, wall=1030.0)
    assert (file.problem, file.skipped, file.paused) == (None, 0, 30.0)
    assert fresh.restore(file.keys, 7.0, file.paused) == 2
    assert fresh.acquire("http://a/1", 8.0) == (1, False)
    assert fresh.generation("http://b/2") == 2
    assert fresh.generation("http://c/3") == 0
    # A ban of the restored generation moves on from there, once.
    assert fresh.ban("http://b/2", 2, 9.0) == 3
    assert fresh.ban("http://b/2", 2, 9.0) == 3


def test_a_score_back_to_zero_leaves_nothing_to_write(tmp_path: Path) -> None:
    """A key restored at generation 0 with a score, whose score then falls
    back to 0, has nothing left worth writing (a new user's trial found 40
    such ``{"generation": 0}`` entries in a resumed crawl's file)."""
    path = tmp_path / snapshot.FILENAME
    store = MemoryStore()
    store.add_score("http://a/1", 0, 1, 1.0)
    assert saved(store, path) == 1
    fresh = MemoryStore()
    assert fresh.restore(loaded(path).keys, 7.0, 0.0) == 1
    assert fresh.acquire("http://a/1", 8.0) == (0, False)  # claimed
    fresh.add_score("http://a/1", 0, -1, 9.0)  # a success: back to 0
    assert saved(fresh, path) == 0


def test_error_scores_survive_a_round_trip(tmp_path: Path) -> None:
    """STICKY_PROXY_BAN_TOLERANCE: a session's score comes back with its
    generation (also at generation 0); a burned session's score does not."""
    path = tmp_path / snapshot.FILENAME
    store = MemoryStore()
    store.add_score("http://a/1", 0, 2, 1.0)  # generation 0, scored
    store.ban("http://b/2", 0, 1.0)
    store.add_score("http://b/2", 1, 1, 1.0)
    store.add_score("http://c/3", 0, 1, 1.0)
    store.ban("http://c/3", 0, 2.0)  # burned: its score goes with it
    assert saved(store, path) == 3

    fresh = MemoryStore()
    file = loaded(path, wall=1010.0)
    fresh.restore(file.keys, 5.0, file.paused)
    assert fresh.acquire("http://a/1", 6.0) == (0, False)
    assert fresh.score("http://a/1", 0) == 2
    assert fresh.acquire("http://b/2", 6.0) == (1, False)
    assert fresh.score("http://b/2", 1) == 1
    assert fresh.acquire("http://c/3", 6.0) == (1, False)
    assert fresh.score("http://c/3", 1) == 0


def test_rotation_state_survives_with_the_pause_counted(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILENAME
    rotation = Rotation(max_age=100.0, max_uses=5)
    store = MemoryStore(rotation=rotation)
    store.acquire("old", 0.0)  # born at 0: 50 s old when saved at 50
    for _ in range(3):
        store.acquire("used", 40.0)
    saved(store, path, now=50.0, wall=1000.0)

    fresh = MemoryStore(rotation=rotation)
    file = loaded(path, wall=1030.0)  # paused for 30 s
    fresh.restore(file.keys, 500.0, file.paused)  # another monotonic clock
    # 50 s old + 30 s paused + 19 s: not yet 100.
    assert fresh.acquire("old", 519.0) == (0, False)
    assert fresh.acquire("old", 521.0) == (1, True)
    assert fresh.acquire("used", 501.0) == (0, False)  # 4th use
    assert fresh.acquire("used", 501.0) == (0, False)  # 5th
    assert fresh.acquire("used", 501.0) == (1, True)


def test_the_snapshot_is_bounded_by_max_keys(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILENAME
    store = MemoryStore(max_keys=3)
    for i in range(5):
        store.ban(f"k{i}", 0, float(i))
    assert saved(store, path) == 3
    assert len(json.loads(path.read_text())["keys"]) == 3

    # Read with a lower bound: the most recently used are kept.
    file = loaded(path, max_keys=2)
    assert file.skipped == 1
    fresh = MemoryStore(max_keys=2)
    assert fresh.restore(file.keys, 0.0, 0.0) == 2
    assert [fresh.generation(f"k{i}") for i in (2, 3, 4)] == [0, 1, 1]
    # New bans push restored keys out first, and the store stays bounded.
    fresh = MemoryStore(max_keys=2)
    fresh.restore(file.keys, 0.0, 0.0)
    fresh.ban("new", 0, 1.0)
    assert len(fresh) == 2
    assert (fresh.generation("k3"), fresh.generation("k4")) == (0, 1)


def test_a_failed_write_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / snapshot.FILENAME
    store = MemoryStore()
    store.ban("first", 0, 1.0)
    saved(store, path)
    before = path.read_bytes()
    store.ban("second", 0, 2.0)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        saved(store, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [snapshot.FILENAME]  # no temporary left

    # A crash mid-write left a partial temporary file: it is never read,
    # and the next write replaces it.
    Path(f"{path}.tmp").write_bytes(b'{"format": "scrapy-sti')
    assert list(loaded(path).keys) == [key_digest("first")]
    saved(store, path)
    assert len(loaded(path).keys) == 2
    assert os.listdir(tmp_path) == [snapshot.FILENAME]


def document(**changes: Any) -> dict[str, Any]:
    good = {"generation": 1}
    return {
        "format": snapshot.FORMAT,
        "version": snapshot.VERSION,
        "scope": SCOPE,
        "saved": 900.0,
        "keys": {key_digest("k"): good},
        **changes,
    }


HOSTILE_FILES = {
    "empty": b"",
    "not_json": b"not json",
    "truncated": json.dumps(document()).encode()[:-7],
    "not_utf8": b'{"format": "\xff\xfe"}',
    "deeply_nested": b"[" * 200_000,
    "huge_number": b'{"version": ' + b"9" * 5000 + b"}",
    "a_list": b"[]",
    "someone_elses": json.dumps({"format": "other", "keys": {}}).encode(),
    "newer_version": json.dumps(document(version=2)).encode(),
    "other_scope": json.dumps(document(scope=snapshot.scope_of("x"))).encode(),
    "saved_nan": json.dumps(document(saved=float("nan"))).encode(),
    "saved_text": json.dumps(document(saved="900")).encode(),
    "saved_past_a_float": json.dumps(document(saved=10**400)).encode(),
    "keys_a_list": json.dumps(document(keys=[["d", 1]])).encode(),
    # Past the room of 10 keys and of the tiers of 1,000 sites (300 kB).
    "too_large": json.dumps(document(pad="x" * 400_000)).encode(),
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_a_hostile_file_is_set_aside_whole(tmp_path: Path, name: str) -> None:
    path = tmp_path / snapshot.FILENAME
    path.write_bytes(HOSTILE_FILES[name])
    file = loaded(path, max_keys=10)
    assert file.problem is not None
    assert file.keys == {}


def test_bad_entries_are_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILENAME
    good = {key_digest(f"good{i}"): {"generation": i + 1} for i in range(2)}
    bad: dict[str, Any] = {
        "http://example.com/": {"generation": 1},  # a key, not a digest
        "0" * 23: {"generation": 1},
        "A" * 24: {"generation": 1},
        "1" * 24: [1],
        "2" * 24: {"generation": True},
        "3" * 24: {"generation": -1},
        "4" * 24: {"generation": 2**31},
        "5" * 24: {"generation": 1.5},
        "6" * 24: {"generation": "3"},
        "7" * 24: {"generation": 1, "uses": -1},
        "8" * 24: {"generation": 1, "age": float("inf")},
        "a" * 24: {"generation": 1, "age": 10**400},
    }
    path.write_text(json.dumps(document(keys={**bad, **good, "9" * 24: None})))
    file = loaded(path)
    assert file.problem is None
    assert file.keys == good
    assert file.skipped == len(bad) + 1
    store = MemoryStore()
    store.restore(file.keys, 0.0, file.paused)
    assert store.generation("good1") == 2


def test_no_file_is_a_fresh_start(tmp_path: Path) -> None:
    assert snapshot.load(str(tmp_path / "none"), SCOPE, 10, 0.0) is None


def first_visits(*paths: str) -> Any:
    """Bans the exit of the first request for each of *paths*."""
    left = set(paths)

    def rule(client_ip: str, path: str) -> str | None:
        if path in left:
            left.discard(path)
            return "403"
        return None

    return rule


@deferred_f_from_coro_f
async def test_a_resumed_crawl_never_uses_a_burned_session(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """One key for the whole site (``host``), so that the resumed crawl
    uses the key whose sessions the paused one burned; the site bans every
    exit it banned once, so going back to one shows."""
    n = 12
    rule = RememberBans(first_visits("/item/1", "/item/4"))
    sandbox.site.ban_rule = rule
    jobdir = tmp_path / "job"
    settings = settings_for(sandbox, JOBDIR=str(jobdir), STICKY_PROXY_KEY="host")
    base = sandbox.site_url
    # One request at a time: the pause leaves most requests in the queue.
    # With 16 at once, how many were still queued (rather than in flight,
    # which the first run finishes) depended on timing, and once in a full
    # suite run none were: the resumed crawl had nothing to send.
    paused = {**settings, "CLOSESPIDER_ITEMCOUNT": 8, "CONCURRENT_REQUESTS": 1}
    first = await crawl(ItemsSpider, paused, base=base, n=n)
    assert first.stats["finish_reason"] == "closespider_itemcount"
    assert first.stats["sticky_proxy/bans"] >= 1
    assert first.stats["sticky_proxy/jobdir/saved_keys"] == 1
    burned = set(rule.banned)
    assert burned
    state = (jobdir / snapshot.FILENAME).read_text()
    assert "127.0.0.1" not in state  # the key (host:port) is a digest

    before = len(sandbox.site.hits)
    second = await crawl(ItemsSpider, settings, base=base, n=n)
    assert second.stats["finish_reason"] == "finished"
    resumed = sandbox.site.hits[before:]
    assert len(resumed) >= n  # most of the crawl was left for this run
    assert not [hit for hit in resumed if hit.client_ip in burned]
    assert second.stats["sticky_proxy/jobdir/restored_keys"] == 1
    assert second.stats.get("sticky_proxy/gave_up", 0) == 0
    got = sorted((i["item"], i["part"]) for r in (first, second) for i in r.items)
    assert got == sorted((i, part) for i in range(n) for part in PARTS)


@deferred_f_from_coro_f
async def test_a_state_file_that_cannot_be_read_or_written(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory where the file should be: one warning at the start, one
    error at the end, and the crawl is not disturbed."""
    jobdir = tmp_path / "job"
    (jobdir / snapshot.FILENAME).mkdir(parents=True)
    settings = settings_for(sandbox, JOBDIR=str(jobdir))
    result = await crawl(ItemsSpider, settings, base=sandbox.site_url, n=2)
    assert result.stats["finish_reason"] == "finished"
    assert len(result.items) == 8
    assert result.stats["sticky_proxy/jobdir/rejected"] == 1
    assert result.stats["sticky_proxy/jobdir/write_errors"] == 1
    mine = [r for r in caplog.records if "sticky proxy state" in r.getMessage()]
    assert [r.levelname for r in mine] == ["WARNING", "ERROR"]
    assert not list(jobdir.glob("*.tmp"))


@deferred_f_from_coro_f
async def test_rerolls_spent_before_the_pause_still_count(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The re-rolls a request spent travel in its meta, which Scrapy's
    requests.queue keeps: resumed, it has only the rest of its budget."""
    banned_once: list[str] = []

    def first_request(client_ip: str, path: str) -> str | None:
        if banned_once:
            return None
        banned_once.append(path)
        return "403"

    sandbox.site.ban_rule = first_request
    jobdir = tmp_path / "job"
    gave_up = tmp_path / "gave_up.jsonl"
    settings = settings_for(
        sandbox,
        JOBDIR=str(jobdir),
        CONCURRENT_REQUESTS=1,
        STICKY_PROXY_MAX_REROLLS=1,
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
    )
    base = sandbox.site_url
    first = await crawl(
        ItemsSpider, {**settings, "CLOSESPIDER_ITEMCOUNT": 1}, base=base, n=3
    )
    assert first.stats["sticky_proxy/rerolls"] == 1
    assert records(gave_up) == []
    banned = base + banned_once[0]

    sandbox.site.ban_rule = ban_all()
    before = len(sandbox.site.hits)
    await crawl(ItemsSpider, settings, base=base, n=3)
    again = [h for h in sandbox.site.hits[before:] if base + h.path == banned]
    assert len(again) == 1  # its second and last attempt
    record = next(r for r in records(gave_up) if r["url"] == banned)
    assert record["attempts"] == 2
