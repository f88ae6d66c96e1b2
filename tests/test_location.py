"""Location per request (issue 14.3): ``meta["sticky_proxy_country"]`` and
STICKY_PROXY_COUNTRY put the country where each preset reads it; a key in
two countries is two sessions; a country a preset cannot write is refused,
never sent from somewhere else."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_sticky_proxy.config import StickyProxyConfig
from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.routing.location import (
    COUNTRY_CODES,
    INVALID,
    UNSUPPORTED,
    LocationError,
    country_code,
    located_key,
)
from scrapy_sticky_proxy.routing.providers import get_preset
from scrapy_sticky_proxy.routing.router import Router
from scrapy_sticky_proxy.routing.template import ProxyTemplate
from scrapy_sticky_proxy.sandbox import Sandbox, match_credentials
from scrapy_sticky_proxy.sandbox._credentials import credential_country
from scrapy_sticky_proxy.state.memory import MemoryStore

from .conftest import crawl, records
from .test_crawl import settings_for

PW = "S3cr3tPw"

# preset -> (your URL, what goes to the gateway for session "abc123" in DE, in US)
LOCATED = {
    "packetstream": (
        f"http://user:{PW}@proxy.packetstream.io:31112",
        f"http://user:{PW}_country-Germany_session-abc123@proxy.packetstream.io:31112",
        f"http://user:{PW}_country-UnitedStates_session-abc123@proxy.packetstream.io:31112",
    ),
    "brightdata": (
        f"http://brd-customer-c1-zone-res:{PW}@brd.superproxy.io:33335",
        f"http://brd-customer-c1-zone-res-country-de-session-abc123:{PW}@brd.superproxy.io:33335",
        f"http://brd-customer-c1-zone-res-country-us-session-abc123:{PW}@brd.superproxy.io:33335",
    ),
    "oxylabs": (
        f"http://customer-bob:{PW}@pr.oxylabs.io:7777",
        f"http://customer-bob-cc-DE-sessid-abc123:{PW}@pr.oxylabs.io:7777",
        f"http://customer-bob-cc-US-sessid-abc123:{PW}@pr.oxylabs.io:7777",
    ),
    "decodo": (
        f"http://user-bob:{PW}@gate.decodo.com:7000",
        f"http://user-bob-country-de-session-abc123:{PW}@gate.decodo.com:7000",
        f"http://user-bob-country-us-session-abc123:{PW}@gate.decodo.com:7000",
    ),
    "iproyal": (
        f"http://bob:{PW}@geo.iproyal.com:12321",
        f"http://bob:{PW}_country-de_session-abc123@geo.iproyal.com:12321",
        f"http://bob:{PW}_country-us_session-abc123@geo.iproyal.com:12321",
    ),
    "soax": (
        f"http://package-123:{PW}@proxy.soax.com:5000",
        f"http://package-123-country-de-sessionid-abc123:{PW}@proxy.soax.com:5000",
        f"http://package-123-country-us-sessionid-abc123:{PW}@proxy.soax.com:5000",
    ),
    "netnut": (
        f"http://bob:{PW}@gw.netnut.net:5959",
        f"http://bob-res-de-sid-abc123:{PW}@gw.netnut.net:5959",
        f"http://bob-res-us-sid-abc123:{PW}@gw.netnut.net:5959",
    ),
    "geonode": (
        f"http://geonode_bob:{PW}@proxy.geonode.io:10000",
        f"http://geonode_bob-country-de-session-abc123:{PW}@proxy.geonode.io:10000",
        f"http://geonode_bob-country-us-session-abc123:{PW}@proxy.geonode.io:10000",
    ),
    "sandbox": (
        "http://demo:demo@127.0.0.1:8031",
        "http://demo-country-de-session-abc123:demo@127.0.0.1:8031",
        "http://demo-country-us-session-abc123:demo@127.0.0.1:8031",
    ),
}


@pytest.mark.parametrize("preset", list(LOCATED))
def test_each_preset_writes_the_country_where_its_provider_reads_it(
    preset: str,
) -> None:
    url, in_de, in_us = LOCATED[preset]
    template = ProxyTemplate.parse(url, get_preset(preset))
    assert template.render("abc123", "DE") == in_de
    assert template.render("abc123", "US") == in_us
    # The sandbox gateway reads it back in every preset's format.
    user, password = template.credentials("abc123", "DE") or ("", "")
    base_user = url.split("//")[1].split(":")[0]
    base_pw = url.split(":")[2].split("@")[0]
    session = match_credentials(
        user, password, username=base_user, expected_password=base_pw
    )
    assert session == "abc123"
    assert credential_country(user, password) == "DE"
    assert credential_country(*(template.credentials("abc123", "US") or ())) == "US"
    assert credential_country(*(template.credentials("abc123") or ())) == ""


def test_the_lifetime_and_a_location_placeholder_keep_their_places() -> None:
    oxylabs = get_preset("oxylabs")
    template = ProxyTemplate.parse(
        f"http://customer-bob:{PW}@pr.oxylabs.io:7777", oxylabs, 600
    )
    assert template.render("abc123", "FR") == (
        f"http://customer-bob-cc-FR-sessid-abc123-sesstime-10:{PW}@pr.oxylabs.io:7777"
    )
    # A {session} template says where the preset's fragment goes.
    url = f"http://customer-bob{{location}}-sessid-{{session}}:{PW}@pr.oxylabs.io:7777"
    template = ProxyTemplate.parse(url, oxylabs)
    assert template.render("abc123", "FR") == (
        f"http://customer-bob-cc-FR-sessid-abc123:{PW}@pr.oxylabs.io:7777"
    )
    assert template.render("abc123") == (
        f"http://customer-bob-sessid-abc123:{PW}@pr.oxylabs.io:7777"
    )
    with pytest.raises(
        ConfigError,
        match=r"^STICKY_PROXY_URL: has \{location\}, but the generic preset",
    ):
        ProxyTemplate.parse(url, get_preset("generic"))


@pytest.mark.parametrize(
    ("value", "code"), [("de", "DE"), ("DE", "DE"), (" us ", "US"), ("Gb", "GB")]
)
def test_country_codes_are_normalised(value: str, code: str) -> None:
    assert country_code(value) == code


@pytest.mark.parametrize(
    "value",
    ["XX", "UK", "USA", "", "D", "dé", "D\r", "x" * 10_000, 5, True, None, ["DE"]],
)
def test_anything_but_an_iso_code_is_refused(value: Any) -> None:
    with pytest.raises(LocationError) as caught:
        country_code(value)
    assert caught.value.reason == INVALID
    message = str(caught.value)
    assert "ISO 3166-1 alpha-2" in message and len(message) < 200
    assert "\r" not in message
    if value == "UK":
        assert "write GB" in message


def test_the_code_list_is_iso_3166_1() -> None:
    assert len(COUNTRY_CODES) == 249
    assert {"US", "DE", "GB", "BR", "SS", "XK"} - COUNTRY_CODES == {"XK"}
    tab = Path("/usr/share/zoneinfo/iso3166.tab")
    if tab.exists():  # tzdata's copy of the standard, where installed
        lines = tab.read_text(encoding="utf-8").splitlines()
        assert {ln.split("\t")[0] for ln in lines if ln[:1] != "#"} == COUNTRY_CODES


@pytest.mark.parametrize(
    ("preset", "url", "country", "problem"),
    [
        (
            "tor",
            "http://127.0.0.1:9080",
            "DE",
            "the tor preset cannot choose a country",
        ),
        (
            "generic",
            "http://u-{session}:p@gw.example:8000",
            "DE",
            "the generic preset cannot choose a country",
        ),
        (
            "oxylabs",
            "http://customer-bob-cc-DE:p@pr.oxylabs.io:7777",
            "FR",
            "STICKY_PROXY_URL already sets the country (-cc-...)",
        ),
        (
            "netnut",
            "http://bob-res-any:p@gw.netnut.net:5959",
            "US",
            "STICKY_PROXY_URL already sets the country (-res-...)",
        ),
        (
            "iproyal",
            "http://bob:p_country-br@geo.iproyal.com:12321",
            "US",
            "already sets the country (_country-...): remove it from the password",
        ),
        (
            "decodo",
            "http://user-bob-session-{session}:p@gate.decodo.com:7000",
            "US",
            "a {session} template without {location}",
        ),
        (
            "packetstream",
            "http://u:p@proxy.packetstream.io:31112",
            "AQ",
            "the packetstream preset has no name for country AQ",
        ),
    ],
)
def test_a_country_the_url_cannot_write_is_refused(
    preset: str, url: str, country: str, problem: str
) -> None:
    template = ProxyTemplate.parse(url, get_preset(preset))
    with pytest.raises(LocationError) as caught:
        template.render("abc123", country)
    assert caught.value.reason == UNSUPPORTED
    assert problem in str(caught.value)
    assert "p@" not in str(caught.value)


def test_the_default_country_is_checked_at_start() -> None:
    sandbox = {
        "STICKY_PROXY_PROVIDER": "sandbox",
        "STICKY_PROXY_URL": "http://demo:pw@127.0.0.1:8031",
    }
    config = StickyProxyConfig.from_settings(
        Settings({**sandbox, "STICKY_PROXY_COUNTRY": "de"})
    )
    assert config.country == "DE"
    assert StickyProxyConfig.from_settings(Settings(sandbox)).country is None
    bad = [
        (
            {**sandbox, "STICKY_PROXY_COUNTRY": "Germany"},
            "is not an ISO 3166-1 alpha-2",
        ),
        ({**sandbox, "STICKY_PROXY_COUNTRY": 49}, "is not an ISO 3166-1 alpha-2"),
        (
            {
                "STICKY_PROXY_PROVIDER": "tor",
                "STICKY_PROXY_URL": "http://127.0.0.1:9080",
                "STICKY_PROXY_COUNTRY": "DE",
            },
            "the tor preset cannot",
        ),
        (
            {
                "STICKY_PROXY_LIST": ["http://u:p@10.0.0.1:8000"],
                "STICKY_PROXY_COUNTRY": "DE",
            },
            "STICKY_PROXY_LIST (static proxies) cannot",
        ),
        (
            {
                **sandbox,
                "STICKY_PROXY_URL": "http://demo-country-fr:pw@127.0.0.1:8031",
                "STICKY_PROXY_COUNTRY": "DE",
            },
            "already sets the country",
        ),
    ]
    for values, problem in bad:
        with pytest.raises(ConfigError, match=r"^STICKY_PROXY_COUNTRY: ") as caught:
            StickyProxyConfig.from_settings(Settings(values))
        assert problem in str(caught.value)


def test_a_key_in_two_countries_is_two_sessions_and_a_ban_burns_one() -> None:
    template = ProxyTemplate.parse(
        "http://demo:pw@127.0.0.1:8031", get_preset("sandbox")
    )
    config = StickyProxyConfig(provider=get_preset("sandbox"), gateway=template)
    store = MemoryStore()
    router = Router(config, store, clock=lambda: 1000.0)
    in_de, in_us = located_key("k", "DE"), located_key("k", "US")
    ids = {router.session(key).id for key in ("k", in_de, in_us)}
    assert len(ids) == 3
    router.banned(in_de, 0, "127.0.0.1:8031")
    assert (
        store.generation(in_de),
        store.generation(in_us),
        store.generation("k"),
    ) == (1, 0, 0)
    session = router.session(in_de)
    assert session.generation == 1 and session.id not in ids
    header = router.authorization("127.0.0.1:8031", session.id, "latin-1", "DE")
    assert header is not None
    user = base64.b64decode(header.split()[1]).decode().split(":")[0]
    assert user == f"demo-country-de-session-{session.id}"


# -- crawls through the sandbox ---------------------------------------------------


class CountrySpider(Spider):
    """Asks for each (path, meta) it is given, and the detail part of
    /item/2 without meta; yields what the site saw."""

    name = "countries"

    def __init__(
        self, base: str, asks: list[tuple[str, dict[str, Any]]], **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.base = base
        self.asks = asks

    async def start(self) -> Any:
        for path, meta in self.asks:
            yield Request(self.base + path, meta=meta, dont_filter=True)

    def parse(self, response: Response) -> Any:
        meta = response.meta
        asked = meta.get("redirect_urls", [response.url])[0].split("/", 3)[3]
        if asked.endswith("detail"):
            data = response.json()
            seen = data["client"], data.get("country")
        else:
            seen = (
                response.css("#client::text").get(),
                response.css("#country::text").get(),
            )
        yield {
            "asked": asked,
            "exit": seen[0],
            "session": meta["sticky_proxy_session"],
            "site_country": seen[1],
            "country": meta.get("sticky_proxy_country"),
            "generation": meta["sticky_proxy_generation"],
        }
        if asked == "item/2":  # inherits the key and its country
            yield response.follow("/item/2/detail")


def ban_first_exit_of(path: str) -> Any:
    """A ban rule: the first exit that asks for *path* is banned for good."""
    banned: list[str] = []

    def rule(client_ip: str, target: str) -> str | None:
        if target == path and not banned:
            banned.append(client_ip)
        return "403" if client_ip in banned else None

    return rule


@deferred_f_from_coro_f
async def test_one_key_in_two_countries_leaves_through_two_exits(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.site.ban_rule = ban_first_exit_of("/item/8")
    gave_up = tmp_path / "gave_up.jsonl"
    k, b = {"sticky_proxy_key": "k"}, {"sticky_proxy_key": "b"}
    asks = [
        ("/item/1", {**k, "sticky_proxy_country": "de"}),
        ("/item/2", {**k, "sticky_proxy_country": "US"}),
        ("/r/3", {**k, "sticky_proxy_country": "DE"}),  # redirected to /item/3
        ("/item/4", k),  # STICKY_PROXY_COUNTRY
        ("/item/5", {**k, "sticky_proxy_country": ""}),  # anywhere
        ("/item/6", {**k, "sticky_proxy_country": "XX"}),
        ("/item/7", {**k, "sticky_proxy_country": "uk"}),
        ("/item/8", {**b, "sticky_proxy_country": "DE"}),  # banned once
        ("/item/9", {**b, "sticky_proxy_country": "US"}),
    ]
    settings = settings_for(
        sandbox,
        STICKY_PROXY_COUNTRY="br",
        STICKY_PROXY_GAVE_UP_FILE=str(gave_up),
        STICKY_PROXY_INHERIT_KEY=True,
    )
    result = await crawl(CountrySpider, settings, base=sandbox.site_url, asks=asks)
    items = {item.pop("asked"): item for item in result.items}
    exits = {path: item.pop("exit") for path, item in items.items()}
    sessions = {path: item.pop("session") for path, item in items.items()}
    assert items == {
        "item/1": {"site_country": "DE", "country": "DE", "generation": 0},
        "item/2": {"site_country": "US", "country": "US", "generation": 0},
        "item/2/detail": {"site_country": "US", "country": "US", "generation": 0},
        "r/3": {"site_country": "DE", "country": "DE", "generation": 0},
        "item/4": {"site_country": "BR", "country": "BR", "generation": 0},
        "item/5": {"site_country": None, "country": "", "generation": 0},
        "item/8": {"site_country": "DE", "country": "DE", "generation": 1},
        "item/9": {"site_country": "US", "country": "US", "generation": 0},
    }
    # One key: one session and exit per country, the same for each request.
    assert (sessions["item/1"], exits["item/1"]) == (sessions["r/3"], exits["r/3"])
    assert exits["item/2"] == exits["item/2/detail"]
    by_country = ("item/1", "item/2", "item/4", "item/5")
    assert len({sessions[p] for p in by_country}) == 4
    assert len({exits[p] for p in by_country}) == 4
    # The ban burned (b, DE) only: (b, US) kept its session.
    hits = [h for h in sandbox.site.hits if h.path == "/item/8"]
    assert [h.status for h in hits] == [403, 200]
    assert result.stats["sticky_proxy/bans"] == 1
    # Bad codes: recorded with their reason, counted, explained once.
    refused = sorted(
        (r["url"].rsplit("/", 2)[1:], r["reasons"], r["country"])
        for r in records(gave_up)
    )
    assert refused == [
        (["item", "6"], ["country/invalid"], "XX"),
        (["item", "7"], ["country/invalid"], "uk"),
    ]
    assert result.stats["sticky_proxy/country_refused/invalid"] == 2
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1, said
    assert "asks for a country it cannot have" in said[0]
    assert "is not an ISO 3166-1 alpha-2 country code" in said[0]
    assert not [h for h in sandbox.site.hits if h.path in ("/item/6", "/item/7")]


@deferred_f_from_coro_f
async def test_a_url_that_fixes_the_country_refuses_another_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    gave_up = tmp_path / "gave_up.jsonl"
    url = sandbox.gateway_url.replace("sandbox:", "sandbox-country-fr:")
    settings = settings_for(
        sandbox, STICKY_PROXY_URL=url, STICKY_PROXY_GAVE_UP_FILE=str(gave_up)
    )
    asks = [("/item/1", {"sticky_proxy_country": "DE"}), ("/item/2", {})]
    result = await crawl(CountrySpider, settings, base=sandbox.site_url, asks=asks)
    seen = sorted((i["asked"], i["site_country"]) for i in result.items)
    assert seen == [("item/2", "FR"), ("item/2/detail", "FR")]
    assert [r["reasons"] for r in records(gave_up)] == [["country/unsupported"]]
    assert result.stats["sticky_proxy/country_refused/unsupported"] == 1
    assert sorted(h.path for h in sandbox.site.hits) == ["/item/2", "/item/2/detail"]
