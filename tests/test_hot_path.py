"""The per-request path's shortcuts give what the long way gives
(bench/per_request.py measures what they save).

- ``ProxyTemplate.authorization`` joins credentials unquoted once per
  country around the session id, instead of rendering and parsing the proxy
  URL per request;
- ``target_of`` finds a URL's netloc with one regex;
- ``AnswerLog.answered`` skips the reordering when the target is the one
  that answered last;
- the ledger's ids are ints from a counter (no string per request), and
  one in meta continues an entry only if that entry is open.
"""

from __future__ import annotations

import base64
import random
from urllib.parse import urlsplit

import pytest

from scrapy_sticky_proxy.routing.answers import AnswerLog, target_of
from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.location import LocationError
from scrapy_sticky_proxy.routing.providers import PRESETS
from scrapy_sticky_proxy.routing.template import ProxyTemplate

from .test_keys import _generated_urls

URLS = [
    "http://user-{session}:pw@gw.example:8000",
    "http://us%40er-{session}:p%3Aw%C3%A9@gw.example:8000",
    "http://user:pa%25ss-{session}-x%41@gw.example:8000",
    # an escape cut short by the session id: the long way, kept as it was
    "http://user:ab%4{session}@gw.example:8000",
    "http://user:ab%{session}%@gw.example:8000",
    "http://{session}@gw.example:8000",
    "http://user-{session}-{session}:pw@gw.example:8000",
    "http://user:pw@gw.example:8000",  # the preset places the session
    "http://gw.example:8000",  # no credentials at all (Tor-like)
]


def _long_way(template: ProxyTemplate, sid: str, country: str | None) -> bytes | None:
    credentials = template.credentials(sid, country)
    if credentials is None:
        return None
    return b"Basic " + base64.b64encode(":".join(credentials).encode("utf-8"))


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("provider", sorted(PRESETS))
def test_authorization_is_the_long_ways(url: str, provider: str) -> None:
    try:
        template = ProxyTemplate.parse(url, PRESETS[provider], require_session=False)
    except Exception:  # a URL this preset refuses: nothing to compare
        return
    rules = template.id_rules
    sessions = [session_id(f"key{n}", n % 3, rules) for n in range(20)]
    # from meta (not trusted): a "%" makes the shortcut step aside
    sessions += ["a%41b", "%", "x:y@z"]
    for country in (None, "DE", "DE", "de", "ZZ"):
        for sid in sessions:
            try:
                expected = _long_way(template, sid, country)
            except LocationError:
                with pytest.raises(LocationError):
                    template.authorization(sid, "utf-8", country)
                continue
            assert template.authorization(sid, "utf-8", country) == expected


def test_authorization_remembers_valid_countries_only() -> None:
    template = ProxyTemplate.parse(
        "http://user:pw@gw.example:8000", PRESETS["brightdata"]
    )
    for country in ("de", "De", "DE", "FR"):
        template.authorization("abc", "latin-1", country)
    assert set(template._auth) <= {"DE", "FR"}


def _netloc_long_way(url: str) -> str:
    rest = url.partition("//")[2]
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark, 0, end)
        if at != -1:
            end = at
    return rest[:end]


def test_target_of_is_the_netloc() -> None:
    urls = [*_generated_urls(5000, seed=3), "", "x", "//", "http://", "a//b?c//d"]
    for url in urls:
        assert target_of(url) == _netloc_long_way(url), url
        if url.startswith(("http://", "https://")):
            assert target_of(url) == urlsplit(url).netloc, url


def test_answer_log_keeps_the_most_recent_targets() -> None:
    rng = random.Random(5)
    log, model = AnswerLog(max_hosts=3), {}
    for now in range(2000):
        host = rng.choice("aabbcdef")
        log.answered(host, float(now))
        model.pop(host, None)
        model[host] = float(now)
        if len(model) > 3:
            del model[next(iter(model))]
        assert log._last == model
        assert list(log._last) == list(model)


def test_answer_log_of_no_targets_stays_empty() -> None:
    log = AnswerLog(max_hosts=0)
    for now in range(5):
        log.answered("a", float(now))
        assert not log._last
        assert not log.answered_since("a", 0.0)


def test_ledger_ids_are_ints_and_untrusted_ones_start_anew() -> None:
    """Ledger ids are ints counted from a random start (no string made per
    request); an id in meta continues an entry only if it is one of the
    open ones, whatever else a copied or tampered meta carries."""
    from scrapy import Request, Spider
    from scrapy.utils.test import get_crawler

    from scrapy_sticky_proxy import _meta as M
    from scrapy_sticky_proxy.ledger import Ledger

    crawler = get_crawler(Spider)
    ledger = Ledger(crawler, None, str, lambda name: None)  # type: ignore[arg-type]
    other = Ledger(crawler, None, str, lambda name: None)  # type: ignore[arg-type]
    first = Request("http://a.example/1")
    ledger.routed(first, first.meta)
    lid = first.meta[M.LEDGER]
    assert type(lid) is int and len(ledger) == 1
    copy = first.replace()  # a re-roll's copy continues the entry
    ledger.routed(copy, copy.meta)
    assert copy.meta[M.LEDGER] == lid and len(ledger) == 1
    assert ledger.close(copy.meta) is copy
    foreign = Request("http://a.example/2")
    other.routed(foreign, foreign.meta)
    for value in (True, str(lid), float(lid), foreign.meta[M.LEDGER], lid, [lid]):
        request = Request("http://a.example/3", meta={M.LEDGER: value})
        ledger.routed(request, request.meta)
        assert request.meta[M.LEDGER] != value  # not open here: a new entry
        assert ledger.close(request.meta) is request
    assert ledger.close({M.LEDGER: [1]}) is None and len(ledger) == 0
