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

from .conftest import crawl, records
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
