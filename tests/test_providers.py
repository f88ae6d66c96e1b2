"""Provider presets and proxy URL templates (scrapy_sticky_proxy.routing.providers)."""

# ruff: noqa: E501 - tables of exact URLs read better unwrapped

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.routing.ids import session_id
from scrapy_sticky_proxy.routing.providers import PRESETS, get_preset
from scrapy_sticky_proxy.routing.template import ProxyTemplate

PW = "S3cr3tPw"
LIFETIME = "STICKY_PROXY_SESSION_LIFETIME"

# preset -> (user's URL, rendered for "abc123" without lifetime, with 600 s)
EXAMPLES = {
    "generic": (
        f"http://user-session-{{session}}:{PW}@gw.example.com:8000",
        f"http://user-session-abc123:{PW}@gw.example.com:8000",
        None,
    ),
    "packetstream": (
        f"http://user:{PW}_country-UnitedStates@proxy.packetstream.io:31112",
        f"http://user:{PW}_country-UnitedStates_session-abc123@proxy.packetstream.io:31112",
        None,
    ),
    "brightdata": (
        f"http://brd-customer-c1-zone-res-country-us:{PW}@brd.superproxy.io:33335",
        f"http://brd-customer-c1-zone-res-country-us-session-abc123:{PW}@brd.superproxy.io:33335",
        None,
    ),
    "oxylabs": (
        f"http://customer-bob-cc-DE:{PW}@pr.oxylabs.io:7777",
        f"http://customer-bob-cc-DE-sessid-abc123:{PW}@pr.oxylabs.io:7777",
        f"http://customer-bob-cc-DE-sessid-abc123-sesstime-10:{PW}@pr.oxylabs.io:7777",
    ),
    "decodo": (
        f"http://user-bob-country-us:{PW}@gate.decodo.com:7000",
        f"http://user-bob-country-us-session-abc123:{PW}@gate.decodo.com:7000",
        f"http://user-bob-country-us-session-abc123-sessionduration-10:{PW}@gate.decodo.com:7000",
    ),
    "iproyal": (
        f"http://bob:{PW}_country-br@geo.iproyal.com:12321",
        f"http://bob:{PW}_country-br_session-abc123@geo.iproyal.com:12321",
        f"http://bob:{PW}_country-br_session-abc123_lifetime-10m@geo.iproyal.com:12321",
    ),
    "soax": (
        f"http://package-123-country-us:{PW}@proxy.soax.com:5000",
        f"http://package-123-country-us-sessionid-abc123:{PW}@proxy.soax.com:5000",
        f"http://package-123-country-us-sessionid-abc123-sessionlength-600:{PW}@proxy.soax.com:5000",
    ),
    "netnut": (
        f"http://bob-res-us:{PW}@gw.netnut.net:5959",
        f"http://bob-res-us-sid-abc123:{PW}@gw.netnut.net:5959",
        None,
    ),
    "geonode": (
        f"http://geonode_bob-country-fr:{PW}@proxy.geonode.io:10000",
        f"http://geonode_bob-country-fr-session-abc123:{PW}@proxy.geonode.io:10000",
        f"http://geonode_bob-country-fr-session-abc123-lifetime-10:{PW}@proxy.geonode.io:10000",
    ),
    "tor": (
        "http://127.0.0.1:9080",
        "http://abc123:x@127.0.0.1:9080",
        None,
    ),
    "sandbox": (
        "http://demo:demo@127.0.0.1:8031",
        "http://demo-session-abc123:demo@127.0.0.1:8031",
        "http://demo-session-abc123-lifetime-600:demo@127.0.0.1:8031",
    ),
}
EXAMPLES["smartproxy"] = EXAMPLES["decodo"]


def parse(
    url: str, preset: str = "generic", lifetime: int | None = None, **kw: object
) -> ProxyTemplate:
    return ProxyTemplate.parse(url, get_preset(preset), lifetime, **kw)  # type: ignore[arg-type]


def test_every_preset_has_an_example() -> None:
    assert set(EXAMPLES) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(EXAMPLES))
def test_preset_urls(preset: str) -> None:
    url, plain, with_lifetime = EXAMPLES[preset]
    template = parse(url, preset)
    assert template.render("abc123") == plain
    assert template.has_session
    if with_lifetime is None:
        with pytest.raises(
            ConfigError,
            match=f"^{LIFETIME}: is set but .*(no lifetime parameter|without {{lifetime}})",
        ):
            parse(url, preset, 600)
    else:
        assert parse(url, preset, 600).render("abc123") == with_lifetime


def test_smartproxy_is_decodo() -> None:
    assert get_preset("smartproxy") is get_preset("decodo")
    assert get_preset("SmartProxy").name == "decodo"


@pytest.mark.parametrize(
    "name", ["BrightData", " brightdata ", "Bright-Data", "bright_data"]
)
def test_get_preset_is_lenient(name: str) -> None:
    assert get_preset(name).name == "brightdata"


@pytest.mark.parametrize("name", ["brightdat", "zyte", "", None])
def test_get_preset_unknown(name: object) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^STICKY_PROXY_PROVIDER: .*choose one of: .*brightdata.*smartproxy",
    ):
        get_preset(name)  # type: ignore[arg-type]


def test_unknown_preset_message() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown provider 'x'; choose one of: brightdata, decodo,"
    ):
        get_preset("x")


def test_tor_keeps_a_given_password_and_replaces_the_username() -> None:
    assert (
        parse("http://me:torpass@127.0.0.1:9080", "tor").render("k1")
        == "http://k1:torpass@127.0.0.1:9080"
    )
    assert parse("http://127.0.0.1:9080", "tor").password is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"),
        (59, "59s"),
        (90, "90s"),
        (120, "2m"),
        (5400, "90m"),
        (7200, "2h"),
        (86400, "1d"),
        (90000, "25h"),
        (604800, "7d"),
    ],
)
def test_iproyal_lifetime_units(seconds: int, text: str) -> None:
    rendered = parse(
        f"http://bob:{PW}@geo.iproyal.com:12321", "iproyal", seconds
    ).render("abcd1234")
    assert rendered.endswith(f"_session-abcd1234_lifetime-{text}@geo.iproyal.com:12321")


@pytest.mark.parametrize(
    ("preset", "seconds", "match"),
    [
        ("iproyal", 0, "out of range for iproyal: use 1 to 604800 seconds"),
        ("iproyal", 604801, "out of range"),
        ("oxylabs", 90, "not a whole number of minutes"),
        ("oxylabs", 0, "out of range for oxylabs: use 60 to 86400 seconds"),
        ("oxylabs", 1441 * 60, "out of range"),
        ("decodo", 30, "minutes"),
        ("geonode", 120, "out of range for geonode: use 180 to 86400 seconds"),
        ("soax", 86401, "out of range for soax: use 0 to 86400 seconds"),
        ("soax", -1, "out of range"),
        ("sandbox", 0, "out of range"),
        ("oxylabs", True, "whole number of seconds"),
        ("oxylabs", "600", "whole number of seconds"),
        ("oxylabs", 600.0, "whole number of seconds"),
    ],
)
def test_lifetime_errors(preset: str, seconds: object, match: str) -> None:
    url = EXAMPLES[preset][0]
    with pytest.raises(ConfigError, match=f"^{LIFETIME}: .*{match}") as info:
        parse(url, preset, seconds)  # type: ignore[arg-type]
    assert PW not in str(info.value)


def test_lifetime_bounds_accepted() -> None:
    assert "-sessionlength-0:" in parse(EXAMPLES["soax"][0], "soax", 0).render("a")
    assert "-lifetime-3:" in parse(EXAMPLES["geonode"][0], "geonode", 180).render("a")
    assert "-sesstime-1440:" in parse(EXAMPLES["oxylabs"][0], "oxylabs", 86400).render(
        "a"
    )


def test_lifetime_placeholder() -> None:
    # generic: seconds; anywhere in the userinfo
    t = parse(f"http://u-{{session}}:{PW}-ttl{{lifetime}}@h.example:1", "generic", 600)
    assert t.render("abc") == f"http://u-abc:{PW}-ttl600@h.example:1"
    # a preset's own unit; allowed with presets that have no lifetime parameter
    t = parse(
        f"http://u-sessid-{{session}}-sesstime-{{lifetime}}:{PW}@h:1", "oxylabs", 1200
    )
    assert t.render("abc") == f"http://u-sessid-abc-sesstime-20:{PW}@h:1"
    t = parse(f"http://u-session-{{session}}-t-{{lifetime}}:{PW}@h:1", "brightdata", 30)
    assert t.render("abc") == f"http://u-session-abc-t-30:{PW}@h:1"
    # {lifetime} without {session}: the preset appends the session, not a second lifetime
    t = parse(
        f"http://customer-bob-sesstime-{{lifetime}}:{PW}@pr.oxylabs.io:7777",
        "oxylabs",
        600,
    )
    assert (
        t.render("abc")
        == f"http://customer-bob-sesstime-10-sessid-abc:{PW}@pr.oxylabs.io:7777"
    )
    with pytest.raises(
        ConfigError,
        match=f"^{LIFETIME}: is not set, but STICKY_PROXY_URL contains {{lifetime}}",
    ):
        parse(f"http://u-{{session}}-{{lifetime}}:{PW}@h:1")
    with pytest.raises(
        ConfigError, match=f"^{LIFETIME}: .*not a whole number of minutes"
    ):
        parse(f"http://u-{{session}}-{{lifetime}}:{PW}@h:1", "oxylabs", 61)


def test_session_template_without_lifetime_placeholder_rejects_lifetime() -> None:
    with pytest.raises(
        ConfigError, match=f"^{LIFETIME}: .*template without {{lifetime}}"
    ):
        parse(f"http://u-sessid-{{session}}:{PW}@h:1", "oxylabs", 600)


def test_session_template_is_used_literally() -> None:
    t = parse(f"http://custom-{{session}}-x:{PW}@pr.oxylabs.io:7777", "oxylabs")
    assert t.render("abc") == f"http://custom-abc-x:{PW}@pr.oxylabs.io:7777"
    t = parse("http://user:pw_session-{session}@h:1", "packetstream")
    assert t.render("abc") == "http://user:pw_session-abc@h:1"
    assert t.password == "pw_session-"
    t = parse("http://{session}:{session}@h:1", "tor")
    assert t.render("abc") == "http://abc:abc@h:1"
    assert t.password is None


def test_static_entries_without_placeholder() -> None:
    t = parse(
        f"http://user:{PW}@10.0.0.1:3128/",
        setting="STICKY_PROXY_LIST",
        require_session=False,
    )
    assert not t.has_session
    assert t.render("abc") == t.render("zzz") == f"http://user:{PW}@10.0.0.1:3128"
    assert (
        parse("10.0.0.2:3128", require_session=False).render("a")
        == "http://10.0.0.2:3128"
    )
    # the global lifetime does not concern static entries without {lifetime}
    assert (
        parse("10.0.0.2:3128", "brightdata", 600, require_session=False).render("a")
        == "http://10.0.0.2:3128"
    )
    t = parse("http://u-{session}:p@10.0.0.3:3128", require_session=False)
    assert t.render("abc") == "http://u-abc:p@10.0.0.3:3128"


def test_bare_hostport_assumes_http() -> None:
    t = parse(f"brd-customer-c1:{PW}@brd.superproxy.io:33335", "brightdata")
    assert t.scheme == "http"
    assert (
        t.render("a1")
        == f"http://brd-customer-c1-session-a1:{PW}@brd.superproxy.io:33335"
    )
    assert (
        parse(f"HTTP://u:{PW}@H.example:80", "netnut").render("a")
        == f"http://u-sid-a:{PW}@h.example:80"  # host lowercased
    )


def test_percent_escapes_kept_and_raw_specials_escaped() -> None:
    t = parse("http://us%2Fer:p%3Aw%40x@h.example:8080", "brightdata")
    url = t.render("abc")
    assert url == "http://us%2Fer-session-abc:p%3Aw%40x@h.example:8080"
    parts = urlsplit(url)
    assert unquote(parts.username or "") == "us/er-session-abc"
    assert unquote(parts.password or "") == "p:w@x"
    assert t.password == "p:w@x"
    assert {"p%3Aw%40x", "p:w@x"} <= set(t.secrets)
    # a raw "@", "[" or non-ASCII character in the password is escaped
    t = parse("http://user:p@ss[é]:z@h.example:8080", "brightdata")
    url = t.render("abc")
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == ("h.example", 8080)
    assert unquote(parts.password or "") == "p@ss[é]:z"
    assert url.count("@") == 1


def test_ipv6_gateway() -> None:
    t = parse("http://u:p@[::1]:8080", "brightdata")
    assert t.hostport == "[::1]:8080"
    parts = urlsplit(t.render("abc"))
    assert (parts.hostname, parts.port) == ("::1", 8080)


def test_repr_and_redact_hide_the_password() -> None:
    t = parse(f"http://user:{PW}%21@h.example:1", "brightdata")
    assert PW not in repr(t) and PW not in str(t)
    assert "h.example:1" in repr(t)
    assert t.password == f"{PW}!"
    assert PW not in t.redact(f"proxy {t.render('abc')} pw={PW}!")


def test_default_construction() -> None:
    t = ProxyTemplate("h.example:1")
    assert t.render("abc") == "http://h.example:1"
    assert not t.has_session


URL_ERRORS = [
    ("", "STICKY_PROXY_URL", "must be a non-empty proxy URL"),
    ("   ", "STICKY_PROXY_URL", "non-empty"),
    (
        f"socks5://u:{PW}@h:1080",
        "STICKY_PROXY_URL",
        "socks5:// proxies are not supported by Scrapy",
    ),
    (
        f"socks4://u:{PW}@h:1080",
        "STICKY_PROXY_URL",
        "socks4:// proxies are not supported",
    ),
    (
        f"ftp://u:{PW}@h:21",
        "STICKY_PROXY_URL",
        "unsupported proxy scheme 'ftp'; use http:// or https://",
    ),
    (f"http://u:{PW}@:8080", "STICKY_PROXY_URL", "has no host"),
    (f"http://u:{PW}@", "STICKY_PROXY_URL", "has no host"),
    (
        f"http://u:{PW}@gw.example.com",
        "STICKY_PROXY_URL",
        "has no port: write it as http://user:pass@host:PORT",
    ),
    (f"http://u:{PW}@gw.example.com:", "STICKY_PROXY_URL", "has no port"),
    (f"http://u:{PW}@h:0", "STICKY_PROXY_URL", "port must be a number from 1 to 65535"),
    (f"http://u:{PW}@h:65536", "STICKY_PROXY_URL", "port must be"),
    (f"http://u:{PW}@h:http", "STICKY_PROXY_URL", "port must be"),
    (f"http://u:{PW}@h:1/path", "STICKY_PROXY_URL", "must not have a path"),
    (f"http://u:{PW}@h:1?x=1", "STICKY_PROXY_URL", "must not have a path"),
    (f"http://u:{PW}/x@h:1", "STICKY_PROXY_URL", "percent-encode them"),
    (f"http://u:{PW}#x@h:1", "STICKY_PROXY_URL", "percent-encode them"),
    (
        f"http://u:{PW}@::1:8080",
        "STICKY_PROXY_URL",
        "IPv6 host must be written in brackets",
    ),
    (f"http://u:{PW}@[::zz]:8080", "STICKY_PROXY_URL", "invalid IPv6 host"),
    (f"http://u:{PW}@b\u00fccher.de:8080", "STICKY_PROXY_URL", "punycode"),
    (
        f"http://u:{PW}@h_{{session}}:1",
        "STICKY_PROXY_URL",
        "only appear in the username or password",
    ),
    (
        f"http://u-{{sesion}}:{PW}@h:1",
        "STICKY_PROXY_URL",
        r"unknown placeholder \{sesion\}; the allowed placeholders are \{session\}, \{lifetime\}",
    ),
    (
        f"http://{{user}}-{{session}}:{PW}@h:1",
        "STICKY_PROXY_URL",
        r"unknown placeholder \{user\}",
    ),
    (
        f"http://u-{{session}}:{PW}{{x}}@h:1",
        "STICKY_PROXY_URL",
        "unknown placeholder in the password",
    ),
    (f"http://u-{{session:{PW}@h:1", "STICKY_PROXY_URL", "stray '{' or '}'"),
    (f"http://u-{{session}}}}:{PW}@h:1", "STICKY_PROXY_URL", "stray"),
    (
        f"http://u-{{session}}:{PW}\r\nX: y@h:1",
        "STICKY_PROXY_URL",
        "whitespace or control characters",
    ),
    (f"http://u-{{session}}:{PW} x@h:1", "STICKY_PROXY_URL", "whitespace"),
    (
        f"http://u:{PW}@h:1",
        "STICKY_PROXY_URL",
        r"has no \{session\} placeholder: add \{session\}.*STICKY_PROXY_PROVIDER",
    ),
]


@pytest.mark.parametrize(("url", "setting", "match"), URL_ERRORS)
def test_url_errors(url: str, setting: str, match: str) -> None:
    with pytest.raises(ConfigError, match=f"^{setting}: .*{match}") as info:
        parse(url)
    assert PW not in str(info.value)
    assert info.value.setting == setting


@pytest.mark.parametrize(("url", "setting", "match"), URL_ERRORS)
def test_url_errors_name_the_given_setting(url: str, setting: str, match: str) -> None:
    with pytest.raises(ConfigError, match=r"^STICKY_PROXY_LIST: ") as info:
        parse(url, setting="STICKY_PROXY_LIST")
    assert PW not in str(info.value)


def test_non_string_url() -> None:
    for value in (None, 123, b"http://h:1"):
        with pytest.raises(
            ConfigError, match=r"^STICKY_PROXY_URL: must be a non-empty"
        ):
            parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("preset", "url", "match"),
    [
        (
            "brightdata",
            f"http://:{PW}@brd.superproxy.io:33335",
            "brightdata preset appends the session id to the username, but the URL has no username",
        ),
        ("oxylabs", "http://pr.oxylabs.io:7777", "oxylabs preset .* no username"),
        (
            "packetstream",
            "http://user@proxy.packetstream.io:31112",
            "packetstream preset appends the session id to the password, but the URL has no password",
        ),
        (
            "iproyal",
            "http://user:@geo.iproyal.com:12321",
            "iproyal preset .* no password",
        ),
    ],
)
def test_missing_credential_part(preset: str, url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=f"^STICKY_PROXY_URL: the {match}"):
        parse(url, preset)


# -- properties -----------------------------------------------------------------

INJECTED = ("\r", "\n", " ", "@", "/", ":")


def userinfo(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[0]


@settings(max_examples=300, deadline=None)
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    key=st.text(max_size=120),
    generation=st.integers(0, 50),
    lifetime=st.booleans(),
)
def test_property_rendered_url_is_safe(
    preset: str, key: str, generation: int, lifetime: bool
) -> None:
    spec = get_preset(preset)
    url, _, with_lifetime = EXAMPLES[preset]
    template = ProxyTemplate.parse(
        url, spec, 600 if lifetime and with_lifetime else None
    )
    sid = session_id(key, generation, spec.id_rules)
    chars = re.escape(spec.id_rules.alphabet)
    assert re.fullmatch(
        f"[{chars}]{{{spec.id_rules.min_len},{spec.id_rules.max_len}}}", sid
    )
    assert sid == session_id(key, generation, spec.id_rules)
    rendered = template.render(sid)
    parts = urlsplit(rendered)
    reference = urlsplit(template.render("a"))
    assert (parts.hostname, parts.port) == (reference.hostname, reference.port)
    assert f"{parts.hostname}:{parts.port}" == template.hostport
    for ch in INJECTED:
        assert userinfo(rendered).count(ch) == userinfo(template.render("a")).count(ch)
    marked = urlsplit(template.render("SIDMARK"))
    for got, want in (
        (parts.username, marked.username),
        (parts.password, marked.password),
    ):
        assert unquote(got or "") == unquote(want or "").replace("SIDMARK", sid)


@settings(max_examples=100, deadline=None)
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    batch=st.lists(st.text(max_size=60), min_size=2, max_size=10, unique=True),
    generations=st.lists(st.integers(0, 50), min_size=1, max_size=3, unique=True),
)
def test_property_distinct_keys_distinct_urls(
    preset: str, batch: list[str], generations: list[int]
) -> None:
    spec = get_preset(preset)
    template = ProxyTemplate.parse(EXAMPLES[preset][0], spec)
    urls = {
        template.render(session_id(k, g, spec.id_rules))
        for k in batch
        for g in generations
    }
    assert len(urls) == len(batch) * len(generations)


MARK = "Zq9"


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(st.characters(codec="utf-8"), max_size=20),
    user=st.text(st.sampled_from("ab-_{}:%"), max_size=8),
    tail=st.sampled_from(
        ["@h.example:8080", "@h.example", "@h:0", "@[::1]:1", "", "@h:1/"]
    ),
    preset=st.sampled_from(["generic", "brightdata", "iproyal", "tor"]),
)
def test_property_password_never_leaks(
    secret: str, user: str, tail: str, preset: str
) -> None:
    password = MARK + secret
    url = f"http://{user}:{password}{tail}"
    try:
        template = ProxyTemplate.parse(
            url, get_preset(preset), setting="STICKY_PROXY_URL"
        )
    except ConfigError as exc:
        assert MARK not in str(exc)
        return
    assert MARK not in repr(template)
    rendered = template.render("abc12345")
    parts = urlsplit(rendered)
    assert f"{parts.hostname}:{parts.port}".replace("::1", "[::1]") == template.hostport
    assert MARK in unquote(parts.password or "") + unquote(parts.username or "")
    assert MARK not in template.redact(rendered)
