"""Error scores in Redis: each session's score (:mod:`..routing.tolerance`),
shared between crawlers like generations, and off the per-request path.

``ns:e:<digest>`` holds ``<generation> <score>`` and expires after the TTL;
a change for a later generation replaces it (the old session burned), and a
score back at 0 deletes it. The store applies a change to its local view and
queues it; the writer sends it as one :data:`SCORE` script call, which
publishes the result on ``ns:events`` as ``e <digest> <generation> <score>``.
Every crawler applies those events, and loads every score when it
(re)subscribes.

Scores are advisory: an event that arrives late, or a score lost with a
Redis that restarted empty, costs at worst one verdict tolerated or burned
too early. They are not written back when Redis returns (generations are).
What is read back is checked by :func:`parse_score`; anything else is
skipped and counted in ``redis/skipped/score``, never applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .redis_layout import is_digest, parse_generation, scan_pattern
from .store import MAX_SCORE

if TYPE_CHECKING:
    from .redis_store import RedisStore

# KEYS: ns:e:<digest>, ns:events. ARGV: generation, delta, ttl, digest, cap.
# Returns {generation, score} as stored now; {-1, 0} when the value is not a
# score (someone else's write, left alone). A later generation's score is
# left alone too: the session the caller scored has burned.
SCORE = """
local gen, score = tonumber(ARGV[1]), 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local g, s = string.match(raw, '^(%d+) (%d+)$')
  if not g or #raw > 16 then return {-1, 0} end
  g, s = tonumber(g), tonumber(s)
  if g > gen then return {g, s} end
  if g == gen and s <= tonumber(ARGV[5]) then score = s end
end
score = math.max(0, math.min(score + tonumber(ARGV[2]), tonumber(ARGV[5])))
if score == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], gen .. ' ' .. score, 'EX', ARGV[3])
end
redis.call('PUBLISH', KEYS[2], 'e ' .. ARGV[4] .. ' ' .. gen .. ' ' .. score)
return {gen, score}
"""


def parse_score(value: object) -> tuple[int, int] | None:
    """``(generation, score)`` from a ``ns:e:`` value or the tail of an
    ``e`` event, or ``None`` if it is not one: a generation (see
    :func:`parse_generation`), a space, a decimal up to :data:`MAX_SCORE`."""
    if not isinstance(value, str) or len(value) > 16:
        return None
    generation, _, score = value.partition(" ")
    parsed = parse_generation(generation)
    if parsed is None or not (score.isascii() and score.isdigit()):
        return None
    return (parsed, int(score)) if int(score) <= MAX_SCORE else None


def score_call(store: RedisStore, args: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the SCORE script for a queued ``score`` change."""
    digest, generation, delta = args
    keys = [f"{store.ns}:e:{digest}", f"{store.ns}:events"]
    return keys, [generation, delta, store.ttl, digest, MAX_SCORE]


def refused(result: Any) -> bool:
    """Whether the SCORE script left a value that is not a score alone."""
    return isinstance(result, list) and bool(result) and result[0] == -1


def on_event(store: RedisStore, rest: str, where: str) -> None:
    """Apply ``<digest> <generation> <score>`` from ``ns:events``."""
    digest, _, value = rest.partition(" ")
    parsed = parse_score(value)
    if parsed is None or not is_digest(digest):
        store.skips.skip("score", where, "is not a score of a digest")
        return
    store.local.set_score(digest, *parsed)


async def load(store: RedisStore) -> None:
    """Load every shared score into the local view."""
    prefix = f"{store.ns}:e:"
    names = list(
        dict.fromkeys(
            [n async for n in store.client.scan_iter(match=scan_pattern(prefix))]
        )
    )
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        for name, value in zip(chunk, await store.client.mget(chunk), strict=True):
            if value is None:
                continue  # expired since, or not a string: nothing to apply
            digest, parsed = name[len(prefix) :], parse_score(value)
            if parsed is None or not is_digest(digest):
                store.skips.skip("score", name, "is not a score of a digest")
            else:
                store.local.set_score(digest, *parsed)
