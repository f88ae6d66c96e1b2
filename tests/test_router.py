"""The routing core alone: built from plain values, without a crawler or a
reactor, and driven with a fake clock through a ban, a failover, an outage
and a recovery."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from scrapy_sticky_proxy.config import StaticProxy, StickyProxyConfig
from scrapy_sticky_proxy.routing.decisions import (
    CLOSING,
    NEVER_ANSWERED,
    OUTAGE,
    UNREACHABLE,
    Decision,
    Held,
    Wait,
)
from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.providers import get_preset
from scrapy_sticky_proxy.routing.router import Router
from scrapy_sticky_proxy.routing.template import ProxyTemplate
from scrapy_sticky_proxy.state.memory import MemoryStore

GATEWAY = "http://user-{session}:s3cret@127.0.0.1:8000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_router(
    gateway: str | None = GATEWAY, static: tuple[str, ...] = (), **options: Any
) -> tuple[Router, Clock, list[str | None]]:
    generic = get_preset("generic")
    config = StickyProxyConfig(
        gateway=ProxyTemplate.parse(gateway, generic) if gateway else None,
        static_proxies=tuple(
            StaticProxy(template.hostport, template)
            for template in (
                ProxyTemplate.parse(url, generic, require_session=False)
                for url in static
            )
        ),
        **{"probe_wait": 10.0, "outage_backoff_max": 4.0, **options},
    )
    clock = Clock()
    woken: list[str | None] = []
    router = Router(config, MemoryStore(), clock=clock, wall=clock, wake=woken.append)
    return router, clock, woken


def admit(router: Router, key: str, facts: dict[str, Any]) -> Decision | Wait:
    """One pass of a request through the router (what process_request does
    before it waits, if told to)."""
    return router.admit(router.session(key), facts)


def go(router: Router, key: str, facts: dict[str, Any] | None = None) -> Decision:
    step = admit(router, key, {} if facts is None else facts)
    assert isinstance(step, Decision), step
    return step


def test_a_decision_names_session_route_and_proxy_without_credentials():
    router, _, _ = make_router()
    decision = go(router, "http://site/item/1")
    rules = router.config.provider.id_rules
    assert decision == Decision(
        session=session_id("http://site/item/1", 0, rules),
        generation=0,
        route="127.0.0.1:8000",
        proxy="http://127.0.0.1:8000",
    )
    header = router.authorization(decision.route, decision.session, "latin-1")
    assert header is not None and header.startswith(b"Basic ")


def test_the_first_request_probes_the_credentials_and_the_others_wait():
    router, clock, woken = make_router()
    probe: dict[str, Any] = {}
    go(router, "a", probe)
    other: dict[str, Any] = {}
    assert admit(router, "b", other) == Wait("127.0.0.1:8000", 10.0)
    # A copy of the probe made on the way down is still the probe.
    go(router, "a", dict(probe))
    clock.advance(0.2)
    router.answered("127.0.0.1:8000", probe, "site:80")
    assert woken == ["127.0.0.1:8000"]
    go(router, "b", other)


def test_a_ban_moves_the_key_to_a_new_session_once():
    router, clock, _ = make_router()
    first = go(router, "k", {})
    router.answered(first.route, {})
    sibling = go(router, "k", {})  # a follow-up in flight on the same session
    router.banned("k", first.generation, first.route)
    clock.advance(1)
    router.banned("k", sibling.generation, sibling.route)  # same ban: no news
    again = go(router, "k", {})
    assert again.generation == 1
    assert again.session != first.session
    assert again.route == first.route  # a gateway: same route, new exit
    assert go(router, "other", {}).generation == 0


def test_an_outage_holds_requests_probes_with_backoff_then_recovers():
    router, clock, woken = make_router(outage_timeout=30.0)
    route = "127.0.0.1:8000"
    first: dict[str, Any] = {}
    go(router, "a", first)
    router.answered(route, first)  # the credentials work
    in_flight = [{}, {}, {}]
    for facts in in_flight:
        go(router, "a", facts)
    assert router.refused(route, in_flight[0]) == "outage_retries"
    router.refused(route, in_flight[1])  # in flight too: no news
    # Held back for the first backoff step, then one probe goes.
    waiting = [{}, {}]
    assert admit(router, "b", waiting[0]) == Wait(route, pytest.approx(0.5))
    clock.advance(0.5)
    probe: dict[str, Any] = {}
    go(router, "c", probe)
    assert isinstance(admit(router, "b", waiting[0]), Wait)
    # The probe is refused as well: the backoff doubles, up to its maximum.
    clock.advance(0.1)
    router.refused(route, probe)
    assert admit(router, "b", waiting[0]) == Wait(route, pytest.approx(1.0))
    clock.advance(1.0)
    second_probe: dict[str, Any] = {}
    go(router, "d", second_probe)
    # The gateway answers again: every request waiting anywhere is woken.
    clock.advance(0.3)
    woken.clear()
    router.answered(route, second_probe, "site:80")
    assert None in woken
    assert [type(admit(router, "b", facts)) for facts in waiting] == [Decision] * 2


def test_an_outage_longer_than_the_timeout_gives_waiting_requests_up():
    router, clock, _ = make_router(outage_timeout=3.0, outage_backoff_max=1.0)
    route = "127.0.0.1:8000"
    facts: dict[str, Any] = {}
    go(router, "a", facts)
    router.refused(route, facts)
    clock.advance(3.2)
    probe: dict[str, Any] = {}
    go(router, "b", probe)  # one probe per step still goes
    with pytest.raises(Held) as held:
        admit(router, "c", {})
    assert held.value.reason == OUTAGE


def test_static_proxies_fail_over_while_one_answers_and_return_when_it_does():
    router, clock, woken = make_router(
        None, static=("http://10.0.0.1:3128", "http://10.0.0.2:3128")
    )
    keys = [f"k{i}" for i in range(20)]
    picks = {}
    for key in keys:  # each answered at once: both proxies are proven
        facts: dict[str, Any] = {}
        picks[key] = go(router, key, facts).route
        router.answered(picks[key], facts)
    down = "10.0.0.1:3128"
    moved = [key for key in keys if picks[key] == down]
    assert moved and len(moved) < len(keys)
    assert router.refused(down, {}) == "failovers"
    # Keys that picked the refusing proxy leave it; the others stay put.
    for key in keys:
        assert go(router, key, {}).route == "10.0.0.2:3128"
    # The other proxy refuses too: requests wait at their own pick's gate,
    # and a probe that answers brings the proxy back.
    router.refused("10.0.0.2:3128", {})
    step = admit(router, moved[0], {})
    assert step == Wait(down, pytest.approx(0.5))
    clock.advance(0.5)
    probe: dict[str, Any] = {}
    assert go(router, moved[0], probe).route == down
    woken.clear()
    router.answered(down, probe, "site:80")
    assert None in woken
    assert go(router, moved[0], {}).route == down


def test_a_gateway_that_never_answered_is_a_configuration_problem():
    router, clock, _ = make_router(unreachable_timeout=5.0, outage_timeout=600.0)
    route = "127.0.0.1:8000"
    facts: dict[str, Any] = {}
    go(router, "a", facts)
    router.refused(route, facts)
    clock.advance(4.9)
    assert isinstance(admit(router, "b", {}), (Decision, Wait))
    clock.advance(0.2)
    with pytest.raises(Held) as held:
        admit(router, "b", {})
    assert held.value.reason == NEVER_ANSWERED
    assert held.value.close is not None
    reason, message = held.value.close
    assert reason == UNREACHABLE
    assert "the gateway 127.0.0.1:8000 (STICKY_PROXY_URL) has not answered" in message
    assert "s3cret" not in message


def test_a_gateway_that_answered_once_is_in_an_outage_not_misconfigured():
    router, clock, _ = make_router(unreachable_timeout=5.0, outage_timeout=600.0)
    route = "127.0.0.1:8000"
    facts: dict[str, Any] = {}
    go(router, "a", facts)
    router.answered(route, facts)
    failing: dict[str, Any] = {}
    go(router, "a", failing)
    router.refused(route, failing)
    clock.advance(60)
    assert isinstance(admit(router, "b", {}), (Decision, Wait))


def test_rejected_credentials_stop_the_route_and_stop_releases_everyone():
    router, _, woken = make_router()
    go(router, "a", {})
    router.auth_failed("127.0.0.1:8000")
    with pytest.raises(Held) as held:
        admit(router, "b", {})
    assert held.value.reason is None
    router.stop()
    assert woken[-1] is None
    with pytest.raises(Held) as held:
        admit(router, "c", {})
    assert held.value.reason == CLOSING


def test_a_timeout_blames_the_exit_only_if_the_target_answered_meanwhile():
    router, clock, _ = make_router()
    assert router.exit_blamed("site:80", None, timeout=10.0) is None
    router.answered("127.0.0.1:8000", {}, "site:80")
    clock.advance(5)
    assert router.exit_blamed("site:80", None, timeout=10.0) == clock.now - 10
    clock.advance(20)
    assert router.exit_blamed("site:80", None, timeout=10.0) is None


def test_the_routing_core_and_the_stores_import_without_scrapy():
    code = (
        "import sys\n"
        "import scrapy_sticky_proxy.routing.router, scrapy_sticky_proxy.state.memory\n"
        "print(sorted(m for m in ('scrapy', 'twisted') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example:80/x?y#z",
        "https://h.example?q=1",
        "http://h.example#f",
        "http://u:p@h.example:1/",
        "http://h.example",
        "https://[::1]:8443/p",
        "http://h.example/a//b",
        "http://h.example:1?x/y",
        "http://h.example:1#x?y/z",
    ],
)
def test_the_target_of_a_url_is_urlparses_netloc(url: str) -> None:
    from urllib.parse import urlparse

    from scrapy_sticky_proxy.routing.answers import target_of

    assert target_of(url) == urlparse(url).netloc
