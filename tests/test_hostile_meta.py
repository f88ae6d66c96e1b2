"""Meta is untrusted: a spider, another component or a queue that stored
the request (JOBDIR, scrapy-redis with our JSON serializer, which reads
NaN and Infinity back) may leave any value under the keys we read. None of
them may turn a response into an error or lose a request: each request
ends as a response to the spider or as a record. Real crawls through the
sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scrapy import Request, Spider
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy import _meta as M
from scrapy_sticky_proxy.sandbox import ban_all

from .conftest import assert_absent, crawl, records
from .test_crawl import settings_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from scrapy.http import Response
    from twisted.python.failure import Failure

    from scrapy_sticky_proxy.sandbox import Sandbox


class CaseSpider(Spider):
    """One request per case, each with meta of its own; notes how it ended."""

    name = "cases"

    def __init__(self, base: str, cases: list[dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.base = base
        self.cases = cases
        self.ended: dict[int, str] = {}

    async def start(self) -> AsyncIterator[Any]:
        for i, meta in enumerate(self.cases):
            yield Request(
                f"{self.base}/item/{i}",
                meta={"case": i, **meta},
                callback=self.answered,
                errback=self.failed,
                dont_filter=True,
            )

    def answered(self, response: Response) -> None:
        self.ended[response.meta["case"]] = "response"

    def failed(self, failure: Failure) -> None:
        self.ended[failure.request.meta["case"]] = failure.type.__name__


def foreign_trail(base: str) -> tuple[str, str, None]:
    return (f"{base}/elsewhere", "0", None)


def bad_origin(base: str) -> tuple[str, int, Any]:
    # The trail of a redirect whose origin holds headers no Request takes.
    return (f"{base}/item/1", 0, (f"{base}/item/9", "GET", b"", {b"X": [1.5]}))


async def run(
    sandbox: Sandbox, tmp_path: Path, cases: list[dict[str, Any]], **extra: Any
) -> tuple[CaseSpider, list[dict[str, Any]], dict[str, Any]]:
    gave_up = tmp_path / "gave_up.jsonl"
    result = await crawl(
        CaseSpider,
        settings_for(
            sandbox,
            STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
            STICKY_PROXY_MAX_REROLLS=1,
            RETRY_ENABLED=False,
            **extra,
        ),
        base=sandbox.site_url,
        cases=cases,
    )
    spider = result.crawler.spider
    assert isinstance(spider, CaseSpider)
    got = records(gave_up) if gave_up.exists() else []
    return spider, got, result.stats


@deferred_f_from_coro_f
async def test_a_foreign_trail_lets_the_response_through(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    base = sandbox.site_url
    cases = [{M.TRAIL: foreign_trail(base)}, {M.TRAIL: bad_origin(base)}, {}]
    spider, got, stats = await run(sandbox, tmp_path, cases)
    assert spider.ended == {0: "response", 1: "response", 2: "response"}
    assert not got and "log_count/ERROR" not in stats


@deferred_f_from_coro_f
async def test_odd_values_still_end_as_a_record(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Every page banned: each request is re-rolled once, then recorded."""
    sandbox.site.ban_rule = ban_all("403")
    base = sandbox.site_url
    cases = [
        {M.TRAIL: foreign_trail(base)},
        {M.TRAIL: bad_origin(base)},
        {"retry_times": "1"},
        {"retry_times": json.loads("NaN")},
        {"retry_times": None},
        # With a trail of its own, or the bookkeeping would be dropped.
        {M.TRAIL: (f"{base}/item/5", 0, None), M.REROLLS: json.loads("Infinity")},
        {M.COUNTRY: 10**5000},
        {M.COUNTRY: -(10**5000)},
        {},
        # Origins whose cookies no Request takes: the re-roll goes without.
        {
            M.TRAIL: (
                f"{base}/item/9",
                0,
                (f"{base}/r/9", "GET", b"", {}, {"c": 10**5000}),
            )
        },
        {
            M.TRAIL: (
                f"{base}/item/10",
                0,
                (f"{base}/r/10", "GET", b"", {}, [{"n": []}]),
            )
        },
    ]
    spider, got, stats = await run(sandbox, tmp_path, cases)
    # The recorded give-ups end in the errback as IgnoreRequest.
    assert spider.ended == dict.fromkeys(range(len(cases)), "IgnoreRequest")
    assert sorted(int(r["url"].rsplit("/", 1)[1]) for r in got) == list(
        range(len(cases))
    )
    by_case = {int(r["url"].rsplit("/", 1)[1]): r for r in got}
    # A spent re-roll budget that was infinite: given up at once.
    assert by_case[5]["reasons"] == ["status/403"]
    # A country that is no country: given up before it is sent anywhere.
    assert by_case[6]["reasons"] == by_case[7]["reasons"] == ["country/invalid"]
    assert by_case[6]["country"] == "a number of 16610 bits"
    assert "spider_exceptions/count" not in stats


def odd_key(request: Request) -> Any:
    """A STICKY_PROXY_KEY function that fails for some requests: it reads
    what the sample request at start lacks, so start accepts it."""
    how = request.meta.get("key_how")
    if how == "raise":
        raise KeyError("video_id")
    if how == "leak":  # a message holding the proxy URL, password and all
        raise ValueError(f"cannot key through {request.meta['gateway']}")
    if how == "none":
        return None
    if how == "int":
        return 12345
    return request.url


@deferred_f_from_coro_f
async def test_a_key_function_that_fails_ends_its_requests_as_records(
    sandbox: Sandbox, tmp_path: Path, log_text: Any
) -> None:
    """A key function that raises or answers no str for a request: before,
    the request ended in an error before the ledger saw it (no record, the
    crawl "finished"), or in an AttributeError in _live.py for None and
    int. Now each such request is a failed record, the first of each
    reason logged once, passwords redacted."""
    cases = [
        {"key_how": "raise"},
        {"key_how": "raise"},
        {"key_how": "leak", "gateway": sandbox.gateway_url},
        {"key_how": "none"},
        {"key_how": "int"},
        {},
    ]
    spider, got, stats = await run(
        sandbox, tmp_path, cases, STICKY_PROXY_KEY=f"{__name__}.odd_key"
    )
    # KeyFailed: an IgnoreRequest (_key_guard.py).
    assert spider.ended == {**dict.fromkeys(range(5), "KeyFailed"), 5: "response"}
    by_case = {int(r["url"].rsplit("/", 1)[1]): r for r in got}
    assert sorted(by_case) == [0, 1, 2, 3, 4]
    assert {i: r["reasons"] for i, r in by_case.items()} == {
        0: ["key/KeyError"],
        1: ["key/KeyError"],
        2: ["key/ValueError"],
        3: ["key/NoneType"],
        4: ["key/int"],
    }
    assert {r["outcome"] for r in got} == {"failed"}
    assert stats["sticky_proxy/failed"] == 5
    assert stats["sticky_proxy/requests"] == 1
    # One error per reason, naming the setting, the function and the URL.
    errors = [
        line
        for line in log_text().splitlines()
        if line.startswith("ERROR") and "STICKY_PROXY_KEY: odd_key" in line
    ]
    assert len(errors) == 4, errors
    assert any("raised KeyError: 'video_id' for " in line for line in errors)
    assert any("returned NoneType, not a str" in line for line in errors)
    assert stats["log_count/ERROR"] == 4
    assert_absent(sandbox.password, log_text() + json.dumps(got))


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


@deferred_f_from_coro_f
async def test_a_meta_key_without_a_str_ends_as_a_record(
    sandbox: Sandbox, tmp_path: Path, log_text: Any
) -> None:
    """A meta key is used as its str(): before, one whose str() raised (an
    int past Python's 4,300 digits, a class's __str__) left the middleware
    as the request's download error, with no record."""
    cases = [{M.KEY: 10**5000}, {M.KEY: Unprintable()}, {M.KEY: 7}]
    spider, got, stats = await run(sandbox, tmp_path, cases)
    assert spider.ended == {0: "KeyFailed", 1: "KeyFailed", 2: "response"}
    assert {r["url"].rsplit("/", 1)[1]: r["reasons"] for r in got} == {
        "0": ["key/ValueError"],
        "1": ["key/RuntimeError"],
    }
    assert stats["sticky_proxy/failed"] == 2
    errors = [line for line in log_text().splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, errors
    assert all('meta["sticky_proxy_key"]: str() raised' in line for line in errors)


def hostile_reasons(base: str, i: int, password: str) -> dict[str, Any]:
    """Reasons no copy of ours writes: numbers past a float, a __str__ that
    raises, the password (with a trail of its own, or they would be dropped
    as another request's bookkeeping)."""
    reasons = [10**5000, Unprintable(), f"x {password} y", "status/429"]
    return {M.TRAIL: (f"{base}/item/{i}", 0, None), M.REASONS: reasons}


@deferred_f_from_coro_f
async def test_hostile_reasons_and_waits_still_end_as_records(
    sandbox: Sandbox, tmp_path: Path, log_text: Any
) -> None:
    """Every page banned, each request re-rolled once, then recorded: with
    earlier reasons in meta that are no text, or hold the password, and a
    deadline past a float. Before: the reasons raised on the way to the
    record (RuntimeError in the errback, no record), the password was
    written as it was, and the deadline raised OverflowError before the
    request was routed (no record)."""
    sandbox.site.ban_rule = ban_all("403")
    base, password = sandbox.site_url, sandbox.password
    cases = [
        hostile_reasons(base, 0, password),
        {M.NOT_BEFORE: 10**400},
        {M.NOT_BEFORE: -(10**400)},
    ]
    spider, got, _ = await run(sandbox, tmp_path, cases)
    assert spider.ended == dict.fromkeys(range(3), "IgnoreRequest")
    by_case = {int(r["url"].rsplit("/", 1)[1]): r["reasons"] for r in got}
    assert by_case == {
        0: ["x *** y", "status/429", "status/403", "status/403"],
        1: ["status/403", "status/403"],
        2: ["status/403", "status/403"],
    }
    assert_absent(password, log_text() + json.dumps(got))


@deferred_f_from_coro_f
async def test_hostile_reasons_of_requests_lost_at_the_close(
    sandbox: Sandbox, tmp_path: Path, log_text: Any
) -> None:
    """Requests RedirectMiddleware drops past REDIRECT_MAX_TIMES are found
    open at the close and recorded there, one with hostile reasons among
    them. Before: its reasons raised in the close, which then recorded none
    of them, and the store was never closed."""
    sandbox.site.ban_rule = lambda ip, path: "redirect"
    base, password = sandbox.site_url, sandbox.password
    cases = [{}, hostile_reasons(base, 1, password), {}]
    spider, got, stats = await run(sandbox, tmp_path, cases, REDIRECT_MAX_TIMES=0)
    assert spider.ended == dict.fromkeys(range(3), "IgnoreRequest")
    by_case = {int(r["url"].rsplit("/", 1)[1]): r["reasons"] for r in got}
    assert by_case == {
        0: ["lost/spider_closed"],
        1: ["x *** y", "status/429", "lost/spider_closed"],
        2: ["lost/spider_closed"],
    }
    assert stats["sticky_proxy/failed"] == 3
    assert_absent(password, log_text() + json.dumps(got))


def test_an_origin_keeps_the_cookies_scrapy_takes() -> None:
    """Scrapy's cookies= may hold bytes, and None in a cookie's fields:
    kept. Others are dropped, the rest of the spider's request kept."""
    from scrapy_sticky_proxy._reroll import _origin

    for cookies in (
        {"sid": b"abc"},
        {b"sid": "abc"},
        [{"name": "a", "value": "b", "domain": None}],
    ):
        assert _origin(("u", "GET", b"", {}, cookies)) == ("u", "GET", b"", {}, cookies)
    for cookies in ({"c": 10**5000}, [{"n": []}], "c=1", {1: "x"}):
        assert _origin(("u", "GET", b"", {}, cookies)) == ("u", "GET", b"", {}, {})
    assert _origin(("u", "GET", b"", {})) == ("u", "GET", b"", {}, {})  # an older run's
