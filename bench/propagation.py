"""Ban propagation between two processes through Redis.

Process A bans a key; process B, a separate OS process with its own
RedisStore, waits until its local view has the new generation. The time from
A's ban() call to B seeing it is measured on the shared wall clock, N times.

    python -m bench.propagation [--redis-url URL] [-n 500]

Without --redis-url (or REDIS_URL) a redis-server is started on a free
loopback port (the one the test extra installs).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from scrapy_sticky_proxy.state.redis_store import RedisStore

NS = "bench:propagation"


def _watcher(url: str, conn: Connection) -> None:
    """Process B: for each key announced by A, wait until the ban arrives."""

    async def run() -> None:
        store = RedisStore(url, NS, heartbeat_interval=60)
        await store.open()
        conn.send("ready")
        while True:
            key = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            if key is None:
                break
            await store.wait_generation(key, 1)
            conn.send(time.time())
        await store.close()

    asyncio.run(run())


async def measure(url: str, count: int) -> list[float]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_watcher, args=(url, child))
    proc.start()
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, parent.recv) == "ready"
    store = RedisStore(url, NS, heartbeat_interval=60)
    await store.open()
    delays = []
    for i in range(count):
        key = f"bench-{os.getpid()}-{i}"
        parent.send(key)
        start = time.time()
        store.ban(key, 0, 0.0)
        seen = await loop.run_in_executor(None, parent.recv)
        delays.append(seen - start)
    parent.send(None)
    await store.close()
    await loop.run_in_executor(None, proc.join)
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if not url:
        from tests.redis_server import RedisServer

        server = RedisServer(Path(tempfile.mkdtemp())).start()
        url = server.url
    try:
        delays = asyncio.run(measure(url, args.n))
    finally:
        if server is not None:
            server.stop()
    ms = [d * 1000 for d in delays]
    print(f"ban propagation between two processes, {args.n} bans:")
    print(
        f"  median {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms,"
        f" max {max(ms):.2f} ms (target p99 <= 50 ms)"
    )


if __name__ == "__main__":
    main()
