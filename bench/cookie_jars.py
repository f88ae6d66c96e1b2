"""Cookies per session: the jars' memory at 1e5 sessions, and the time a
request takes through our middleware and Scrapy's CookiesMiddleware.

Each session is one URL key whose page sets one cookie (``sid``, 32 hex
digits, as a site's session cookie): its jar is kept. Memory is measured
with tracemalloc: what Python allocated and still holds once the requests
and responses are gone. The jars' own memory (the jars, their ids and our
bookkeeping) is the difference with the one-jar run, which holds what the
harness keeps per request; per jar, it is compared with the health store's
memory per burned key measured in the same run (``bench/scaling.py``).

Runs:

- ``jar per session``: 1e5 sessions, each page sets a cookie;
- ``jar per session, no cookie set``: the same, pages set none (each jar is
  dropped empty when its request ends);
- ``one jar``: STICKY_PROXY_COOKIES_PER_SESSION = False (Scrapy's one jar);
- ``cap``: 1.5e5 sessions with STICKY_PROXY_MAX_COOKIE_JARS = 1e5;
- ``burned``: 1e5 sessions whose pages are all bans: no jar is kept.

Time: median and spread (min to max over the repetitions) of seconds per
request, jar per session against one jar, pages setting a cookie.

    python -m bench.cookie_jars [--sessions 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import statistics
import time
import tracemalloc
from typing import Any

from .per_request import (
    ITEM_BODY,
    SITE,
    cookies_step,
    crawler_for,
    make_sticky,
    sticky_settings,
)

CHUNK = 1000  # requests built (and freed) at a time inside the traced run


def response(request: Any, i: int, status: int = 200, cookie: bool = True) -> Any:
    from scrapy.http import HtmlResponse

    headers = {"Set-Cookie": f"sid={i:032x}; Path=/; HttpOnly"} if cookie else {}
    return HtmlResponse(
        request.url, status=status, headers=headers, body=ITEM_BODY, request=request
    )


def run_sessions(
    mw: Any, start: int, count: int, status: int = 200, cookie: bool = True
) -> None:
    from scrapy import Request

    step = cookies_step(mw)
    for base in range(start, start + count, CHUNK):
        requests = [Request(f"{SITE}/item/{i}") for i in range(base, base + CHUNK)]
        for i, request in enumerate(requests, base):
            # A ban with no re-roll left is given up: IgnoreRequest.
            with contextlib.suppress(Exception):
                step(request, response(request, i, status, cookie))
        del requests


def jar_memory(sessions: int, **kwargs: Any) -> dict[str, float]:
    """Bytes held after *sessions* went through a fresh middleware."""
    extra = {k: v for k, v in kwargs.items() if k.startswith("STICKY_")}
    options = {k: v for k, v in kwargs.items() if not k.startswith("STICKY_")}
    mw = make_sticky("memory", **extra)
    run_sessions(mw, 10**9, CHUNK, **options)  # warm-up, other URLs
    mw.cookies_mw.jars.clear()
    if mw.cookies is not None:
        mw.cookies.held.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run_sessions(mw, 0, sessions, **options)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    jars = len(mw.cookies_mw.jars)
    return {"bytes": used, "jars": jars, "per_session": used / sessions}


def store_memory(keys: int) -> float:
    """Bytes per burned key in the health store (the baseline)."""
    from .scaling import fill

    _, per_key = fill("memory", keys, keys)
    return per_key


def request_time(per_session: bool, count: int, repeat: int) -> list[float]:
    extra = {} if per_session else {"STICKY_PROXY_COOKIES_PER_SESSION": False}
    samples = []
    for round_ in range(repeat + 1):
        mw = make_sticky("memory", **extra)
        gc.collect()
        start = time.perf_counter()
        run_sessions(mw, round_ * count, count)
        seconds = (time.perf_counter() - start) / count
        if round_:
            samples.append(seconds)
    return samples


def run(
    sessions: int = 100_000, repeat: int = 5, progress: Any = None
) -> dict[str, Any]:
    crawler_for(sticky_settings())  # import Scrapy before anything is measured
    logging.disable(logging.WARNING)  # the "burned" run gives up every page
    say = progress or (lambda message: None)
    memory: dict[str, dict[str, float]] = {}
    runs = {
        "jar per session": (sessions, {"STICKY_PROXY_MAX_COOKIE_JARS": sessions}),
        "jar per session, no cookie set": (sessions, {"cookie": False}),
        "one jar": (sessions, {"STICKY_PROXY_COOKIES_PER_SESSION": False}),
        "cap": (sessions * 3 // 2, {"STICKY_PROXY_MAX_COOKIE_JARS": sessions}),
        "burned": (sessions, {"status": 403, "STICKY_PROXY_MAX_REROLLS": 0}),
    }
    for name, (count, kwargs) in runs.items():
        memory[name] = {"sessions": count, **jar_memory(count, **kwargs)}
        say(
            f"cookie jars {name}: {count:,} sessions, {memory[name]['jars']:,} "
            f"jars, {memory[name]['bytes'] / 2**20:.1f} MiB"
        )
    logging.disable(logging.NOTSET)
    baseline = store_memory(sessions)
    times = {
        "jar per session": request_time(True, 5000, repeat),
        "one jar": request_time(False, 5000, repeat),
    }
    pairs = zip(times["jar per session"], times["one jar"], strict=True)
    ratios = [a / b for a, b in pairs]
    # What the harness keeps per request (the ledger's entries, which
    # StickyProxyLedger would close in a crawl) is in every run: the jars'
    # own memory is the difference with the one-jar run.
    jars_bytes = memory["jar per session"]["bytes"] - memory["one jar"]["bytes"]
    return {
        "sessions": sessions,
        "memory": memory,
        "jars_bytes": jars_bytes,
        "bytes_per_jar": jars_bytes / max(1, memory["jar per session"]["jars"]),
        "store_bytes_per_key": baseline,
        "seconds": {name: statistics.median(v) for name, v in times.items()},
        "samples": times,
        "time_ratio": statistics.median(ratios),
        "time_ratio_range": (min(ratios), max(ratios)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = run(args.sessions, args.repeat, progress=print)
    per_jar, base = result["bytes_per_jar"], result["store_bytes_per_key"]
    print(
        f"{result['sessions']:,} jars holding one cookie each: "
        f"{result['jars_bytes'] / 2**20:.1f} MiB, {per_jar:.0f} B a jar, "
        f"x{per_jar / base:.1f} a burned key in the store ({base:.0f} B)"
    )
    seconds = result["seconds"]
    print(
        "per request with CookiesMiddleware: jar per session "
        f"{seconds['jar per session'] * 1e6:.2f} us, one jar "
        f"{seconds['one jar'] * 1e6:.2f} us"
    )
    low, high = result["time_ratio_range"]
    print(
        f"per request, jar per session / one jar: x{result['time_ratio']:.2f} "
        f"(x{low:.2f} to x{high:.2f})"
    )


if __name__ == "__main__":
    main()
