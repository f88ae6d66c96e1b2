"""Per-request cost of proxy middlewares, called directly on the same requests.

For each middleware, ``process_request`` and then ``process_response`` (a 200
item page) on the same URLs, no network and no engine: what the middleware
itself adds to every request. Our ``async def process_request`` is driven the
way an awaiting caller runs it (it does not suspend once the gateway has
answered once), the others are called as Scrapy 2.14+ calls them (without a
``spider`` argument where the method takes none).

Rows:

- ``HttpProxyMiddleware``: Scrapy's, on requests whose ``meta["proxy"]`` is
  the gateway URL with credentials (the end-to-end baseline);
- ``sticky (memory)``: StickyProxyMiddleware alone, memory backend, URL keys;
- ``sticky (redis local view)``: the same with the Redis backend's store (a
  healthy request never reaches Redis, so none is needed here);
- ``sticky (pool of 8)``: the same with ``STICKY_PROXY_SESSION_POOL =
  "host"``: the site's requests spread over 8 sessions, one per member key;
- ``sticky, key in meta``: requests that carry ``sticky_proxy_key`` (as
  follow-ups do): the cost without deriving the key from the URL;
- ``sticky + HttpProxyMiddleware``: the pair a request really goes through;
- ``sticky + auth + ledger``: the three middlewares the addon installs
  (StickyProxyMiddleware, StickyProxyAuth adding and removing the
  Proxy-Authorization header, StickyProxyLedger closing the request's
  entry): our whole path, to hold against HttpProxyMiddleware's row, which
  builds that header too;
- ``sticky + CookiesMiddleware, jar per session`` / ``one jar``: ours with
  Scrapy's CookiesMiddleware around it, cookies per session on / off (the
  page sets no cookie: each session's jar is made, then dropped empty);
  the rows above run with cookies per session on, without CookiesMiddleware;
- ``rotating-proxies``: scrapy-rotating-proxies' RotatingProxyMiddleware and
  BanDetectionMiddleware (both are needed for it to track health), one proxy;
  ``rotating-proxies + HttpProxyMiddleware``: with the header that its
  ``meta["proxy"]`` (credentials in the URL) then costs.

How: paired, interleaved rounds (:mod:`.rounds`): each round times one
pass of every row over fresh requests, in a rotating order, in CPU time,
with garbage collection handled alike for all; every figure is a median
over the rounds with a 95 % bootstrap interval, ratios taken inside each
round. ``--old CHECKOUT`` times another checkout's code (:mod:`.old_code`)
in the same rounds, as ``main: <row>`` rows and a ratio per row.

The targets (``python -m bench``) are on ``sticky (memory)``, which does what
``rotating-proxies`` does (a proxy per request in meta, health from the
response); the header is built after both, by StickyProxyAuth or
HttpProxyMiddleware.

    python -m bench.per_request [--requests 2000] [--min-rounds 30] \
        [--max-rounds 100] [--halfwidth 0.03] [--budget 60] [--no-smoke] \
        [--old CHECKOUT]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import time
import warnings
from collections.abc import Callable
from typing import Any

from . import old_code, rounds

GATEWAY = "http://sandbox:sandbox-secret-pw@127.0.0.1:8911"
SITE = "http://127.0.0.1:8912"
ITEM_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>Item 1</title></head>\n<body>\n"
    b'<h1>Item 1</h1>\n<p>Seen from <span id="client">127.0.1.1</span></p>\n'
    b'<a class="follow" href="/item/1/detail">detail</a>\n'
    b'<a class="follow" href="/item/1/media">media</a>\n'
    b'<a class="follow" href="/item/1/thumb">thumb</a>\n</body></html>\n'
)

# (request, response) -> None; one call handles one request end to end.
Step = Callable[[Any, Any], None]


def drive(result: Any) -> Any:
    """Run a coroutine that does not suspend to its end; pass values through."""
    if not hasattr(result, "send"):
        return result
    try:
        result.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended: the benchmark expects it not to")


def sticky_settings(**extra: Any) -> dict[str, Any]:
    return {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_URL": GATEWAY,
        "STICKY_PROXY_LOG_INTERVAL": 0,
        # The start-time wiring check wants the whole set installed.
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy_sticky_proxy.StickyProxyMiddleware": 690,
            "scrapy_sticky_proxy.auth.StickyProxyAuth": 999,
            "scrapy_sticky_proxy.ledger.StickyProxyLedger": 10,
        },
        # No reactor here: get_crawler would pick Scrapy's aiohttp handler.
        "DOWNLOAD_HANDLERS": {
            "http": "scrapy_sticky_proxy.StickyProxyDownloadHandler",
            "https": "scrapy_sticky_proxy.StickyProxyDownloadHandler",
        },
        **extra,
    }


def crawler_for(settings: dict[str, Any]) -> Any:
    from scrapy import Spider
    from scrapy.utils.reactor import install_reactor, is_reactor_installed
    from scrapy.utils.test import get_crawler

    if not is_reactor_installed():  # the middleware starts a looping call
        install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")

    crawler = get_crawler(Spider, settings)
    crawler.spider = Spider("bench")
    return crawler


def make_sticky(
    backend: str = "memory",
    store: Any = None,
    package: str = "scrapy_sticky_proxy",
    **extra: Any,
) -> Any:
    """Our middleware, warmed up. With cookies per session on (the default),
    bound to a CookiesMiddleware of its own (``mw.cookies_mw``), which the
    steps below do not call: rows without it time our middleware alone.
    *package*: this checkout's, or another one's (:mod:`.old_code`)."""
    from scrapy.downloadermiddlewares.cookies import CookiesMiddleware

    middleware = importlib.import_module(f"{package}.middleware")
    crawler = crawler_for(sticky_settings(**extra))
    if store is None and backend == "redis":
        redis_store = importlib.import_module(f"{package}.state.redis_store")
        # Never opened: a healthy request only reads the local view.
        store = redis_store.RedisStore("redis://127.0.0.1:1/0", "bench")
    mw = middleware.StickyProxyMiddleware(crawler, store=store)
    mw.cookies_mw = CookiesMiddleware.from_crawler(crawler)
    if mw.cookies is not None:
        mw.cookies.bind(mw.cookies_mw.jars)
    # The auth gate: the first response of the gateway proves the
    # credentials; from then on process_request never waits.
    first = make_requests(1, prefix="warm")[0]
    drive(mw.process_request(first))
    mw.process_response(first, make_response(first))
    return mw


def owned(step: Step, mw: Any) -> Step:
    """*step*, marked as going through *mw* (see :func:`prepare`)."""
    step.middleware = mw  # type: ignore[attr-defined]
    return step


def sticky_step(mw: Any) -> Step:
    def step(request: Any, response: Any) -> None:
        drive(mw.process_request(request))
        mw.process_response(request, response)

    return owned(step, mw)


def keyed_step(mw: Any) -> Step:
    def step(request: Any, response: Any) -> None:
        request.meta["sticky_proxy_key"] = request.url
        drive(mw.process_request(request))
        mw.process_response(request, response)

    return owned(step, mw)


def full_step(mw: Any) -> Step:
    """Our three middlewares in their order: ours (690) and the auth (999)
    on the way out, the auth, ours and the ledger (10) on the way back."""
    package = type(mw).__module__.rpartition(".")[0]  # this checkout's, or not
    auth = importlib.import_module(f"{package}.auth").StickyProxyAuth.from_crawler(
        mw.crawler
    )
    ledger = importlib.import_module(f"{package}.ledger").StickyProxyLedger
    ledger = ledger.from_crawler(mw.crawler)
    auth._owner = ledger._owner = mw  # no engine: they cannot look it up

    def step(request: Any, response: Any) -> None:
        drive(mw.process_request(request))
        auth.process_request(request)
        auth.process_response(request, response)
        mw.process_response(request, response)
        ledger.process_response(request, response)

    return owned(step, mw)


def cookies_step(mw: Any) -> Step:
    """Our middleware and Scrapy's CookiesMiddleware around it, as in a crawl
    (ours at 690, CookiesMiddleware at 700)."""
    cookies = mw.cookies_mw

    def step(request: Any, response: Any) -> None:
        drive(mw.process_request(request))
        cookies.process_request(request)
        cookies.process_response(request, response)
        mw.process_response(request, response)

    return owned(step, mw)


def httpproxy_step() -> Step:
    from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware

    mw = HttpProxyMiddleware.from_crawler(crawler_for({}))

    def step(request: Any, response: Any) -> None:
        request.meta["proxy"] = GATEWAY
        mw.process_request(request)

    return step


def pair_step(sticky: Any) -> Step:
    from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware

    proxy = HttpProxyMiddleware.from_crawler(crawler_for({}))

    def step(request: Any, response: Any) -> None:
        drive(sticky.process_request(request))
        proxy.process_request(request)
        sticky.process_response(request, response)

    return owned(step, sticky)


def rotating_step(with_header: bool = False) -> Step:
    """scrapy-rotating-proxies as its README wires it (and HttpProxyMiddleware
    after it, *with_header*); raises ImportError if it is not installed, or
    whatever it raises on this Scrapy."""
    from rotating_proxies.middlewares import (
        BanDetectionMiddleware,
        RotatingProxyMiddleware,
    )
    from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware

    crawler = crawler_for({"ROTATING_PROXY_LIST": [GATEWAY]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rotating = RotatingProxyMiddleware.from_crawler(crawler)
        bans = BanDetectionMiddleware.from_crawler(crawler)
    proxy = HttpProxyMiddleware.from_crawler(crawler) if with_header else None
    spider = crawler.spider
    # Its methods require the spider argument (Scrapy passes it, with a
    # deprecation warning, to methods that require it).

    def step(request: Any, response: Any) -> None:
        rotating.process_request(request, spider)
        if proxy is not None:
            proxy.process_request(request)
        response = bans.process_response(request, response, spider)
        rotating.process_response(request, response, spider)

    return step


def make_requests(count: int, prefix: str = "item") -> list[Any]:
    from scrapy import Request

    return [Request(f"{SITE}/{prefix}/{i}") for i in range(count)]


def make_response(request: Any) -> Any:
    from scrapy.http import HtmlResponse

    return HtmlResponse(request.url, status=200, body=ITEM_BODY, request=request)


def time_step(step: Step, requests: list[Any], responses: list[Any]) -> float:
    """Seconds per request for one pass over fresh requests."""
    gc.collect()
    start = time.perf_counter()
    for request, response in zip(requests, responses, strict=True):
        step(request, response)
    return (time.perf_counter() - start) / len(requests)


def prepare(step: Step, count: int) -> Callable[[], Callable[[], int]]:
    """What :func:`.rounds.measure` times: *step* over *count* fresh requests
    and their responses, built before the pass (untimed).

    Before that, the ledger entries of our middleware's earlier passes are
    closed: in a crawl StickyProxyLedger closes each one as its response
    goes by, and the rows without it would otherwise keep every request of
    the run alive (a ledger of tens of thousands, which a crawl never has)."""
    mw = getattr(step, "middleware", None)

    def ready() -> Callable[[], int]:
        if mw is not None:
            mw.ledger._open.clear()
        requests = make_requests(count)
        responses = [make_response(r) for r in requests]

        def run() -> int:
            for request, response in zip(requests, responses, strict=True):
                step(request, response)
            return count

        return run

    return ready


def rotating_crawl(items: int = 50) -> dict[str, Any]:
    """Does scrapy-rotating-proxies still run on this Scrapy? A real crawl
    through the sandbox with it, and the warnings it raised."""
    from .common import crawl_command, run_crawl, sandbox_process

    try:
        with sandbox_process(items=items) as sandbox:
            result = run_crawl(crawl_command("rotating", sandbox, items))
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-2000:]}
    return {
        "ok": True,
        "pages": result["pages"],
        "expected": result["expected"],
        "warnings": result["warnings"],
    }


BASELINES = ("HttpProxyMiddleware", "rotating-proxies")


def old_rows(package: str) -> dict[str, Callable[[], Step]]:
    """The rows timed for another checkout's *package* too."""

    def sticky(backend: str = "memory", **extra: Any) -> Any:
        return make_sticky(backend, package=package, **extra)

    return {
        "sticky (memory)": lambda: sticky_step(sticky()),
        "sticky (redis local view)": lambda: sticky_step(sticky("redis")),
        "sticky (pool of 8)": lambda: sticky_step(
            sticky(STICKY_PROXY_SESSION_POOL="host")
        ),
        "sticky, key in meta": lambda: keyed_step(sticky()),
        "sticky + auth + ledger": lambda: full_step(sticky()),
    }


def run(
    count: int = 2000,
    min_rounds: int = 30,
    max_rounds: int = 100,
    halfwidth: float = 0.03,
    budget: float = 60.0,
    smoke: bool = True,
    progress: Callable[[str], None] | None = None,
    old: str | None = None,
) -> dict[str, Any]:
    """*old*: a checkout whose code is timed too, row by row (:data:`OLD_ROWS`,
    named ``main: <row>``), and read as paired ratios this / old."""
    steps: dict[str, Callable[[], Step]] = {
        "HttpProxyMiddleware": httpproxy_step,
        "sticky (memory)": lambda: sticky_step(make_sticky("memory")),
        "sticky (redis local view)": lambda: sticky_step(make_sticky("redis")),
        "sticky (pool of 8)": lambda: sticky_step(
            make_sticky("memory", STICKY_PROXY_SESSION_POOL="host")
        ),
        "sticky, key in meta": lambda: keyed_step(make_sticky("memory")),
        "sticky + HttpProxyMiddleware": lambda: pair_step(make_sticky("memory")),
        "sticky + auth + ledger": lambda: full_step(make_sticky("memory")),
        "sticky + CookiesMiddleware, jar per session": lambda: cookies_step(
            make_sticky("memory")
        ),
        "sticky + CookiesMiddleware, one jar": lambda: cookies_step(
            make_sticky("memory", STICKY_PROXY_COOKIES_PER_SESSION=False)
        ),
    }
    rotating_error = None
    try:
        rotating_step()
    except Exception as exc:  # ImportError, or how it fails on this Scrapy
        rotating_error = f"{type(exc).__name__}: {exc}"
    else:
        steps["rotating-proxies"] = rotating_step
        steps["rotating-proxies + HttpProxyMiddleware"] = lambda: rotating_step(True)
    pairs = {}
    if old is not None:
        package = old_code.load(old)
        for row, build in old_rows(package).items():
            steps[f"main: {row}"] = build
            pairs[row] = f"main: {row}"
    passes = {name: prepare(make(), count) for name, make in steps.items()}
    result = rounds.measure(
        passes,
        BASELINES,
        pairs=pairs,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        halfwidth=halfwidth,
        budget=budget,
        progress=progress,
    )
    return {
        **result,
        "rotating_error": rotating_error,
        "rotating_crawl": rotating_crawl() if smoke else None,
        "requests": count,
    }


def main() -> None:
    from .common import Report
    from .per_request_report import report_per_request, report_targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per pass")
    parser.add_argument("--min-rounds", type=int, default=30)
    parser.add_argument("--max-rounds", type=int, default=100)
    parser.add_argument("--halfwidth", type=float, default=0.03)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds")
    parser.add_argument("--no-smoke", action="store_true", help="no real crawl")
    parser.add_argument("--old", default=None, help="a checkout to time against")
    args = parser.parse_args()
    result = run(
        args.requests,
        args.min_rounds,
        args.max_rounds,
        args.halfwidth,
        args.budget,
        smoke=not args.no_smoke,
        progress=print,
        old=args.old,
    )
    r = Report()
    report_per_request(r, result)
    report_targets(r)


if __name__ == "__main__":
    main()
