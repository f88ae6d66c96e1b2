"""Which burned keys a bounded local view has forgotten: a Bloom filter pair.

The Redis store's local view evicts least recently used keys past
STICKY_PROXY_MAX_KEYS; Redis still knows them. Remembering which were
evicted, in about 2 bytes a key, lets a request of such a key fetch its
generation back, while every other key still costs no round trip.
"""

from __future__ import annotations


class EvictedFilter:
    """Which burned keys a bounded local view has evicted, in about 2 bytes
    a key: two Bloom filters of *capacity* keys each (1 in 1000 false
    positives). When the newer is full the older is dropped, so the latest
    *capacity* to 2 x *capacity* evictions are remembered. Keys are the
    hex digests of :func:`redis_layout.key_digest` (96 bits)."""

    HASHES = 10  # with 15 bits a key: ~0.1 % false positives when full

    def __init__(self, capacity: int):
        self.capacity = max(1024, capacity)
        self.bits = self.capacity * 15
        # Allocated on the first eviction: most crawls never evict.
        self._new: bytearray | None = None
        self._old: bytearray | None = None
        self._count = 0

    def __bool__(self) -> bool:
        return self._count > 0 or self._old is not None

    def _hashes(self, digest: str) -> tuple[int, int]:
        value = int(digest, 16)
        return value & 0xFFFFFFFFFFFF, (value >> 48) | 1

    def add(self, digest: str) -> None:
        if self._new is None or self._count >= self.capacity:
            self._old, self._new = self._new, bytearray(self.bits // 8 + 1)
            self._count = 0
        a, b = self._hashes(digest)
        bits, new = self.bits, self._new
        for i in range(self.HASHES):
            position = (a + i * b) % bits
            new[position >> 3] |= 1 << (position & 7)
        self._count += 1

    def __contains__(self, digest: str) -> bool:
        a, b = self._hashes(digest)
        return any(self._has(f, a, b) for f in (self._new, self._old) if f is not None)

    def _has(self, bloom: bytearray, a: int, b: int) -> bool:
        bits = self.bits
        for i in range(self.HASHES):
            position = (a + i * b) % bits
            if not bloom[position >> 3] & (1 << (position & 7)):
                return False
        return True
