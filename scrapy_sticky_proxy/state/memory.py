"""The memory backend of the health store: one process, bounded.

At most *max_keys* keys are kept, the least recently used forgotten first; a
key at generation 0 takes no memory unless rotation is on. Error scores of
sessions (STICKY_PROXY_BAN_TOLERANCE above 1) are kept beside, bounded the
same way, only while above 0. Give-up records are appended to
STICKY_PROXY_GAVE_UP_FILE, one JSON line each. Its state goes out and comes
back as a JOBDIR snapshot (:mod:`.snapshot`) through
:meth:`MemoryStore.export` and :meth:`MemoryStore.restore`.

Pure logic besides the give-up file: no Scrapy, and time is a parameter.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from .gave_up import GaveUpFile
from .redis_layout import key_digest
from .store import DEFAULT_MAX_KEYS, MAX_SCORE, HealthStore, Rotation

logger = logging.getLogger(__name__)
_NO_ROTATION = Rotation()


class _Session:
    """A key's state when rotation is on. Slots, not a list: a store may hold
    a million of these (``python -m bench.scaling``: 276 -> 228 bytes per
    key with the key string, at 100,000 keys)."""

    __slots__ = ("born", "generation", "uses")

    def __init__(self, generation: int, born: float | None, uses: int):
        self.generation = generation
        self.born = born  # None without a maximum age
        self.uses = uses


def _generation_of(entry: int | _Session) -> int:
    return entry if isinstance(entry, int) else entry.generation


class MemoryStore(HealthStore):
    """A per-process store, bounded to *max_keys* (least recently used keys
    are forgotten first; a forgotten key restarts at generation 0).

    Without rotation only keys that have been banned take memory: a key at
    generation 0 needs no entry. With rotation every key has a
    :class:`_Session` entry.
    """

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        rotation: Rotation = _NO_ROTATION,
        gave_up_file: str | None = None,
    ):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.rotation = rotation
        self.gave_up_file = gave_up_file
        self.evicted = 0
        #: Called with each evicted key that was past generation 0.
        self.on_evict: Callable[[str], None] | None = None
        # key -> generation (no rotation) or _Session
        self._entries: OrderedDict[str, Any] = OrderedDict()
        # key -> (generation, error score above 0), as bounded as _entries
        self._scores: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # The same for keys restored from a snapshot, by digest, until a
        # request names the key (then it moves to _entries). Older than
        # every entry: evicted first.
        self._restored: dict[str, Any] = {}
        self._restored_scores: dict[str, int] = {}  # digest -> score above 0
        self._gave_up = GaveUpFile(gave_up_file) if gave_up_file else None

    def __len__(self) -> int:
        return len(self._entries) + len(self._restored)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def generation(self, key: str) -> int:
        entry = self._entries.get(key)
        if entry is None and self._restored:
            entry = self._claim(key)
        return 0 if entry is None else _generation_of(entry)

    def acquire(self, key: str, now: float) -> tuple[int, bool]:
        entries = self._entries
        if not self.rotation.enabled:
            generation = entries.get(key)
            if generation is None and self._restored:
                generation = self._claim(key)
            if generation is None:
                return 0, False
            entries.move_to_end(key)
            return generation, False
        max_age, max_uses = self.rotation.max_age, self.rotation.max_uses
        # The birth time only matters with a maximum age: not keeping it
        # otherwise saves a float per key.
        born = now if max_age is not None else None
        entry = entries.get(key)
        if entry is None and self._restored:
            entry = self._claim(key)
        if entry is None:
            self._put(key, _Session(0, born, 1))
            return 0, False
        entries.move_to_end(key)
        rotated = False
        if (max_uses is not None and entry.uses >= max_uses) or (
            entry.born is not None
            and max_age is not None
            and now - entry.born >= max_age
        ):
            entry.generation += 1
            entry.born = born
            entry.uses = 0
            rotated = True
        entry.uses += 1
        return entry.generation, rotated

    def ban(self, key: str, generation: int, now: float) -> int:
        current = self.generation(key)
        if current > generation:
            return current
        new = generation + 1
        self.set_generation(key, new, now)
        return new

    def set_generation(self, key: str, generation: int, now: float) -> None:
        """Move *key* to *generation* if that is ahead of where it is (used to
        apply what other processes learned)."""
        if generation <= self.generation(key):
            if key in self._entries:
                self._entries.move_to_end(key)
            return
        scored = self._scores.get(key)
        if scored is not None and scored[0] < generation:
            del self._scores[key]  # the session it scored burned
        if self.rotation.enabled:
            born = now if self.rotation.max_age is not None else None
            self._put(key, _Session(generation, born, 0))
        else:
            self._put(key, generation)

    def adopt(self, key: str, generation: int, now: float) -> None:
        """Track *key* at *generation* or later, even generation 0 (what a
        shared store answered: the key needs no lookup while it stays)."""
        if key in self._entries:
            self.set_generation(key, generation, now)
        elif self.rotation.enabled:
            born = now if self.rotation.max_age is not None else None
            self._put(key, _Session(generation, born, 0))
        else:
            self._put(key, generation)

    def score(self, key: str, generation: int) -> int:
        entry = self._scores.get(key)
        return entry[1] if entry is not None and entry[0] == generation else 0

    def add_score(self, key: str, generation: int, delta: int, now: float) -> int:
        score = max(0, min(self.score(key, generation) + delta, MAX_SCORE))
        self.set_score(key, generation, score)
        return self.score(key, generation)

    def set_score(self, key: str, generation: int, score: int) -> None:
        """Set the score of (*key*, *generation*); a generation behind the
        key's is gone, and so is its score."""
        scores = self._scores
        if score <= 0 or generation < self.generation(key):
            entry = scores.get(key)
            if entry is not None and entry[0] <= generation:
                del scores[key]
            return
        scores[key] = (generation, score)
        scores.move_to_end(key)
        if len(scores) > self.max_keys:
            scores.popitem(last=False)

    def scores(self) -> Iterator[tuple[str, int, int]]:
        """(key, generation, score) of every session with a score."""
        for key, (generation, score) in list(self._scores.items()):
            yield key, generation, score

    def items(self) -> Iterator[tuple[str, int]]:
        """(key, generation) of every key past generation 0."""
        for key, entry in list(self._entries.items()):
            generation = _generation_of(entry)
            if generation:
                yield key, generation

    def _put(self, key: str, value: Any) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        restored = self._restored
        while restored and len(entries) + len(restored) > self.max_keys:
            digest = next(iter(restored))
            del restored[digest]
            self._restored_scores.pop(digest, None)
            self.evicted += 1
        while len(entries) > self.max_keys:
            old, entry = entries.popitem(last=False)
            self.evicted += 1
            if self.on_evict is not None and _generation_of(entry):
                self.on_evict(old)

    # -- JOBDIR snapshots ------------------------------------------------

    def _claim(self, key: str) -> Any:
        """The restored state of *key*, now tracked by the key itself."""
        digest = key_digest(key)
        entry = self._restored.pop(digest, None)
        if entry is not None:
            self._put(key, entry)
            score = self._restored_scores.pop(digest, 0)
            if score:
                self.set_score(key, _generation_of(entry), score)
        return entry

    def export(self, now: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """(digest, state) of every key worth keeping, least recently used
        first: the fields of :data:`.snapshot.FIELDS`."""
        restored = self._restored.items()
        entries = ((key_digest(k), e) for k, e in list(self._entries.items()))
        scores = {key_digest(k): (g, n) for k, (g, n) in list(self._scores.items())}
        scores.update(
            (d, (_generation_of(self._restored[d]), n))
            for d, n in self._restored_scores.items()
            if d in self._restored
        )
        for digest, entry in (*restored, *entries):
            if isinstance(entry, int):
                state: dict[str, Any] = {"generation": entry}
            else:
                state = {"generation": entry.generation, "uses": entry.uses}
                if entry.born is not None:
                    state["age"] = max(0.0, now - entry.born)
            scored = scores.pop(digest, None)
            if scored is not None and scored[0] == state["generation"]:
                state["score"] = scored[1]
            if state != {"generation": 0}:  # else nothing worth keeping
                yield digest, state
        for digest, (generation, score) in scores.items():  # at generation 0
            if not generation:
                yield digest, {"generation": 0, "score": score}

    def restore(
        self, keys: dict[str, dict[str, Any]], now: float, paused: float
    ) -> int:
        """Take the checked entries of a snapshot (least recently used first)
        written *paused* seconds ago, under this store's rotation, before
        the crawl routes its first request. Returns how many were taken (the
        newest, up to ``max_keys``)."""
        rotation = self.rotation
        for digest, state in keys.items():
            generation = state.get("generation", 0)
            if state.get("score"):
                self._restored_scores[digest] = state["score"]
            if not rotation.enabled:
                if generation or state.get("score"):
                    self._restored[digest] = generation
                continue
            born = None
            if rotation.max_age is not None:
                born = now - state.get("age", 0.0) - paused
            self._restored[digest] = _Session(generation, born, state.get("uses", 0))
        overflow = len(self._entries) + len(self._restored) - self.max_keys
        for digest in list(self._restored)[: max(0, overflow)]:
            del self._restored[digest]
        for digest in [d for d in self._restored_scores if d not in self._restored]:
            del self._restored_scores[digest]
        return len(self._restored)

    @property
    def gave_up_write_errors(self) -> int:
        """Records the give-up file could not take (each logged at ERROR)."""
        return 0 if self._gave_up is None else self._gave_up.errors

    def record_give_up(self, record: dict[str, Any]) -> None:
        if self._gave_up is not None:
            self._gave_up.append(record)

    async def close(self) -> None:
        if self._gave_up is not None:
            self._gave_up.close()
