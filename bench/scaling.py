"""Scaling: per-request cost and memory per tracked key, 1e3 to 1e6 keys.

A key takes memory in the health store once it has been banned (or, with
proactive rotation, as soon as it is used). For each size the store is
filled with that many tracked keys, then the middleware's process_request +
process_response is timed on requests for tracked keys drawn at random
(random access is the worst case for the CPU caches).

Memory is measured with tracemalloc: the bytes Python allocated while the
keys went in (the key strings included, since the store keeps them alive),
divided by the number of keys. It does not count allocator slack or
fragmentation, which RSS would.

Stores:

- ``memory``: MemoryStore, URL keys, banned once (the default setup);
- ``redis``: the Redis backend's local view (keys by 96-bit digest);
- ``memory + rotation``: STICKY_PROXY_SESSION_MAX_USES set, so every key
  used takes an entry ``[generation, born, uses]``.

The cap: with STICKY_PROXY_MAX_KEYS at its default (100,000), 1e6 banned
keys are pushed through a store; it must end with 100,000 keys and the
memory of 100,000.

    python -m bench.scaling [--sizes 1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from .per_request import (
    SITE,
    crawler_for,
    make_response,
    make_sticky,
    sticky_settings,
    sticky_step,
    time_step,
)

SIZES = (1_000, 100_000, 1_000_000)
STORES = ("memory", "redis", "memory + rotation")


def url(i: int) -> str:
    return f"{SITE}/item/{i}"


def new_store(kind: str, max_keys: int) -> Any:
    from scrapy_sticky_proxy.state.memory import MemoryStore
    from scrapy_sticky_proxy.state.store import Rotation

    if kind == "memory":
        return MemoryStore(max_keys)
    if kind == "memory + rotation":
        return MemoryStore(max_keys, Rotation(max_uses=10**9))
    from scrapy_sticky_proxy.state.redis_store import RedisStore

    # Never opened: only the local view is exercised.
    return RedisStore("redis://127.0.0.1:1/0", "bench", max_keys=max_keys)


def filler(kind: str, store: Any) -> Callable[[int], None]:
    """Puts key *i* into *store* the way a crawl would make it tracked."""
    now = time.monotonic()
    if kind == "memory":
        return lambda i: store.ban(url(i), 0, now)
    if kind == "memory + rotation":
        # Each key is born at its own time: its own float, as in a crawl.
        return lambda i: store.acquire(url(i), time.monotonic())
    from scrapy_sticky_proxy.state.redis_layout import key_digest

    # What a ban announced by another crawler (or loaded at start) leaves in
    # the local view: the digest, at generation 1.
    local = store.local
    return lambda i: local.set_generation(key_digest(url(i)), 1, now)


def fill(kind: str, size: int, max_keys: int) -> tuple[Any, float]:
    """A store with *size* keys pushed in, and the bytes it took per key."""
    # A first, untraced fill of the same kind: lazily built state (the
    # first one in a process read 85 bytes/key instead of 257) stays out.
    warm_up = filler(kind, new_store(kind, 1000))
    for i in range(1000):
        warm_up(i)
    gc.collect()
    tracemalloc.start()
    try:
        store = new_store(kind, max_keys)
        before = tracemalloc.get_traced_memory()[0]
        put = filler(kind, store)
        for i in range(size):
            put(i)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return store, used / max(1, len(store))


def request_cost(store: Any, size: int, count: int, repeat: int) -> float:
    """Median seconds per request on keys drawn from the *size* tracked."""
    mw = make_sticky(store=store)
    step = sticky_step(mw)
    rng = random.Random(size)
    samples = []
    for _ in range(repeat + 1):
        requests = requests_for([rng.randrange(size) for _ in range(count)])
        responses = [make_response(r) for r in requests]
        samples.append(time_step(step, requests, responses))
    return statistics.median(samples[1:])


def requests_for(indexes: list[int]) -> list[Any]:
    from scrapy import Request

    return [Request(url(i)) for i in indexes]


def check_keys() -> None:
    """The URLs used are their own canonical form, so the keys filled in
    are the keys the middleware derives."""
    from scrapy_sticky_proxy.routing.keys import url_key

    for i in (0, 7, 999_999):
        assert url_key(url(i)) == url(i), url(i)


def run(
    sizes: tuple[int, ...] = SIZES,
    count: int = 5000,
    repeat: int = 5,
    cap_keys: int = 1_000_000,
    progress: Any = None,
) -> dict[str, Any]:
    from scrapy_sticky_proxy.state.store import DEFAULT_MAX_KEYS

    check_keys()
    crawler_for(sticky_settings())  # import Scrapy before anything is timed
    rows: dict[str, dict[int, dict[str, float]]] = {kind: {} for kind in STORES}
    for kind in STORES:
        for size in sizes:
            store, per_key = fill(kind, size, max(sizes))
            cost = request_cost(store, size, count, repeat)
            rows[kind][size] = {"bytes_per_key": per_key, "seconds": cost}
            if progress:
                progress(
                    f"scaling {kind} {size:>9,} keys: {per_key:.0f} B/key, "
                    f"{cost * 1e6:.2f} us/request"
                )
            del store
            gc.collect()
    # The cap: push cap_keys banned keys through a store at the default cap.
    store, per_key = fill("memory", cap_keys, DEFAULT_MAX_KEYS)
    cap = {
        "pushed": cap_keys,
        "max_keys": DEFAULT_MAX_KEYS,
        "tracked": len(store),
        "bytes": per_key * len(store),
        "bytes_per_key": per_key,
    }
    if progress:
        progress(
            f"scaling cap: {cap_keys:,} keys pushed, {len(store):,} kept, "
            f"{cap['bytes'] / 2**20:.1f} MiB"
        )
    return {"sizes": list(sizes), "rows": rows, "cap": cap, "requests": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    run(sizes, args.requests, args.repeat, progress=print)


if __name__ == "__main__":
    main()
