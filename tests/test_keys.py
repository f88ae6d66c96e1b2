"""Key policies and the session id codec (scrapy_sticky_proxy.routing.keys, .ids)."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import string
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from w3lib.url import canonicalize_url

from scrapy_sticky_proxy.errors import ConfigError
from scrapy_sticky_proxy.routing import keys
from scrapy_sticky_proxy.routing.ids import ALNUM, IdRules, session_id
from scrapy_sticky_proxy.routing.keys import (
    domain_key,
    host_key,
    load_key_policy,
    url_key,
)

GENERIC = IdRules(ALNUM, 1, 64)
BRIGHTDATA = IdRules(ALNUM, 1, 32)
IPROYAL = IdRules(ALNUM, 8, 8)
GEONODE = IdRules(ALNUM + "_", 1, 25)
VIDEO = "https://example.com/watch?v=dQw4w9WgXcQ"


def fits(value: str, rules: IdRules) -> bool:
    chars = re.escape(rules.alphabet)
    return bool(re.fullmatch(f"[{chars}]{{{rules.min_len},{rules.max_len}}}", value))


# -- codec: fixed values (a change of algorithm must fail here) ----------------


@pytest.mark.parametrize(
    ("key", "rules", "expected"),
    [
        (VIDEO, GENERIC, ["GGDnXt7vvnAY", "GGDnXt7vvnAYr1", "GGDnXt7vvnAYr2"]),
        (VIDEO, IPROYAL, ["GGDnXt7v", "FTRIVdOr", "zgO7QWUI"]),
        (VIDEO, GEONODE, ["GEAkVs4uum8Y", "GEAkVs4uum8Yr1", "GEAkVs4uum8Yr2"]),
        ("", GENERIC, ["H6KJnkqUdbSc", "H6KJnkqUdbScr1", "H6KJnkqUdbScr2"]),
        ("", IPROYAL, ["H6KJnkqU", "pl4yLMT8", "8GNA1tJk"]),
        ("dQw4w9WgXcQ", IPROYAL, ["AOP9WOXM", None, None]),
        ("a1B2c3D4", IPROYAL, ["a1B2c3D4", "iP2S4iN5", None]),
    ],
)
def test_fixed_ids(key: str, rules: IdRules, expected: list[str | None]) -> None:
    for generation, want in enumerate(expected):
        if want is not None:
            assert session_id(key, generation, rules) == want


def test_stem_is_the_documented_blake2b_bytes() -> None:
    """One character per byte of the BLAKE2b-512 digest: byte % 62 picks
    it among the alphabet in sorted order."""
    digest = hashlib.blake2b(
        VIDEO.encode(), digest_size=64, person=b"sticky-proxy"
    ).digest()
    digits = string.digits + string.ascii_uppercase + string.ascii_lowercase
    stem = "".join(digits[byte % 62] for byte in digest[:12])
    assert session_id(VIDEO, 0, GENERIC) == stem
    retry = hashlib.blake2b(
        f"{VIDEO}\x001".encode(), digest_size=64, person=b"sticky-proxy/gen"
    ).digest()
    hashed = "".join(digits[byte % 62] for byte in retry[:8])
    assert session_id(VIDEO, 1, IPROYAL) == hashed


def test_ids_longer_than_the_digest_are_padded() -> None:
    rules = IdRules(ALNUM, 70, 80)
    value = session_id("x", 0, rules)
    assert len(value) == 70 and value.endswith("0" * 6) and fits(value, rules)
    assert value[:64] == session_id("x", 0, IdRules(ALNUM, 64, 80))


def test_alphabet_order_does_not_matter() -> None:
    shuffled = IdRules(
        string.digits + string.ascii_lowercase + string.ascii_uppercase, 1, 64
    )
    assert session_id(VIDEO, 0, shuffled) == session_id(VIDEO, 0, GENERIC)
    assert shuffled == IdRules(shuffled.alphabet, 1, 64)


# -- codec: behaviour -----------------------------------------------------------


def test_safe_key_used_as_is_only_at_generation_zero() -> None:
    assert session_id("dQw4w9WgXcQ", 0, BRIGHTDATA) == "dQw4w9WgXcQ"
    retry = session_id("dQw4w9WgXcQ", 1, BRIGHTDATA)
    assert retry != "dQw4w9WgXcQ"
    assert re.fullmatch(r"[A-Za-z0-9]{12}r1", retry)
    # too long for IPRoyal's exactly 8, so hashed
    assert session_id("dQw4w9WgXcQ", 0, IPROYAL) != "dQw4w9WgXcQ"
    assert session_id("under_score", 0, GEONODE) == "under_score"
    assert session_id("under_score", 0, BRIGHTDATA) != "under_score"


def test_generation_suffix_extends_the_stem() -> None:
    stem = session_id(VIDEO, 0, BRIGHTDATA)
    assert len(stem) == 12
    for generation in (1, 2, 10, 99):
        assert session_id(VIDEO, generation, BRIGHTDATA) == f"{stem}r{generation}"


def test_generation_that_does_not_fit_is_hashed() -> None:
    rules = IdRules(ALNUM, 1, 14)
    stem = session_id(VIDEO, 0, rules)
    assert session_id(VIDEO, 9, rules) == f"{stem}r9"
    long_gen = session_id(VIDEO, 10, rules)
    assert len(long_gen) == 12
    assert long_gen != stem
    assert fits(long_gen, rules)


def test_alphabet_without_r_uses_hash_for_retries() -> None:
    rules = IdRules("0123456789abcdef", 1, 40)
    ids = [session_id(VIDEO, n, rules) for n in range(30)]
    assert len(set(ids)) == 30
    assert all(fits(i, rules) and len(i) == 12 for i in ids)


def test_iproyal_exactly_eight() -> None:
    ids = {session_id(VIDEO, n, IPROYAL) for n in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{8}", i) for i in ids)


def test_min_len_above_twelve_gives_longer_ids() -> None:
    rules = IdRules(ALNUM, 20, 30)
    assert len(session_id("x", 0, rules)) == 20
    assert len(session_id("x", 1, rules)) == 22
    assert len(session_id("a" * 25, 0, rules)) == 25  # safe, used as is


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a" * 10_000,
        "é" * 10_000,
        "user@host:pw/x",
        "line\r\nProxy-Authorization: evil",
        " spaced key ",
        "ключ-ユニコード-🙂",
        "\ud800lone\udfffsurrogates",
        "\x00\x7f",
        "a%40b",
    ],
)
@pytest.mark.parametrize("rules", [GENERIC, BRIGHTDATA, IPROYAL, GEONODE])
def test_hostile_keys_give_valid_ids(key: str, rules: IdRules) -> None:
    seen = set()
    for generation in range(4):
        value = session_id(key, generation, rules)
        assert fits(value, rules)
        assert value == session_id(key, generation, rules)
        seen.add(value)
    assert len(seen) == 4


def test_gen_zero_of_nul_joined_key_differs_from_retry() -> None:
    # key + "\0" + n is hashed under its own personalisation
    assert session_id("a\x001", 0, IPROYAL) != session_id("a", 1, IPROYAL)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="generation"):
        session_id("k", -1, GENERIC)
    with pytest.raises(TypeError, match="str"):
        session_id(b"k", 0, GENERIC)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("alphabet", "lo", "hi"),
    [
        ("a", 1, 8),
        ("aaaa", 1, 8),
        ("ab@", 1, 8),
        ("ab c", 1, 8),
        (ALNUM, 0, 8),
        (ALNUM, 9, 8),
    ],
)
def test_bad_rules(alphabet: str, lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match="IdRules"):
        IdRules(alphabet, lo, hi)


def test_rules_accepts() -> None:
    assert IPROYAL.accepts("abcd1234")
    assert not IPROYAL.accepts("abcd123")
    assert not IPROYAL.accepts("abcd-234")
    assert "ALNUM" not in repr(IPROYAL) and "_charset" not in repr(IPROYAL)


@settings(max_examples=200, deadline=None)
@given(key=st.text(max_size=200), generation=st.integers(0, 50))
def test_property_deterministic_and_fits(key: str, generation: int) -> None:
    for rules in (GENERIC, IPROYAL, GEONODE):
        value = session_id(key, generation, rules)
        assert fits(value, rules)
        assert value == session_id(key, generation, rules)


@settings(max_examples=100, deadline=None)
@given(
    batch=st.lists(st.text(max_size=40), min_size=2, max_size=15, unique=True),
    generations=st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True),
)
def test_property_distinct_pairs_distinct_ids(
    batch: list[str], generations: list[int]
) -> None:
    for rules in (BRIGHTDATA, IPROYAL):
        ids = {session_id(k, g, rules) for k in batch for g in generations}
        assert len(ids) == len(batch) * len(generations)


# -- key policies ---------------------------------------------------------------


def test_url_key_canonical() -> None:
    assert url_key("http://ex.com/p?b=2&a=1") == url_key("http://ex.com/p?a=1&b=2")
    assert url_key("http://ex.com/p#frag") == url_key("http://ex.com/p")
    assert url_key("http://ex.com/p?a=1") != url_key("http://ex.com/p?a=2")
    assert url_key("http://[::1") == "http://[::1"  # broken URL: its own key


def test_host_key() -> None:
    assert host_key("https://WWW.Example.COM:8443/x?y") == "www.example.com"
    assert host_key("http://user:pw@host.example./") == "host.example"
    assert host_key("http://10.0.0.1:80/") == "10.0.0.1"
    assert host_key("http://[2001:DB8::1]:80/") == "2001:db8::1"
    assert host_key("data:text/plain,hi") == "data:text/plain,hi"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://a.b.example.co.uk:8080/x", "example.co.uk"),
        ("https://WWW.BBC.CO.UK/news", "bbc.co.uk"),
        ("https://img.example.com/a.png", "example.com"),
        ("http://127.0.0.1:8000/", "127.0.0.1"),
        ("http://[::1]:8000/", "::1"),
        ("http://localhost:8000/", "localhost"),
        ("http://printer.internal/", "printer.internal"),
        ("http://co.uk/", "co.uk"),
    ],
)
def test_domain_key(url: str, expected: str) -> None:
    assert domain_key(url) == expected


def test_domain_key_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    keys._extractor.cache_clear()
    keys._registrable_domain.cache_clear()
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert domain_key("https://shop.example.com.au/") == "example.com.au"


def custom_key(request: object) -> str:
    return "custom"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("url", "http://sub.ex.com/p?a=1&b=2"),
        (" HOST ", "sub.ex.com"),
        ("Domain", "ex.com"),
        (custom_key, "custom"),
    ],
)
def test_load_key_policy(value: object, expected: str) -> None:
    func = load_key_policy(value)  # type: ignore[arg-type]
    assert func(SimpleNamespace(url="http://sub.ex.com/p?b=2&a=1#f")) == expected


def test_load_key_policy_dotted_path() -> None:
    # stdlib functions stand in for a user's callable(request) -> str
    assert load_key_policy("os.path.basename")("/a/b") == "b"
    assert load_key_policy("posixpath:basename")("/a/b") == "b"


def test_load_key_policy_nested_attribute() -> None:
    func = load_key_policy("collections.OrderedDict.fromkeys")
    assert callable(func)


ACCEPTED = re.escape("'url', 'host', 'domain'")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("nosuchmodule_xyz.func", "nosuchmodule_xyz"),
        ("nosuchmodule_xyz.sub.func", "nosuchmodule_xyz"),
        ("os.path.nosuchfunc", "no attribute 'nosuchfunc'"),
        ("os.sep", "not a callable"),
        ("urll", "unknown key policy 'urll'"),
        ("", "empty"),
        (42, "expected a string or a callable"),
        (None, "expected a string or a callable"),
    ],
)
def test_load_key_policy_errors(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=r"^STICKY_PROXY_KEY: ") as info:
        load_key_policy(value)  # type: ignore[arg-type]
    assert re.search(match, str(info.value))
    assert re.search(ACCEPTED, str(info.value))
    assert info.value.setting == "STICKY_PROXY_KEY"


def test_load_key_policy_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_keys_mod.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "bad_import_mod.py").write_text("import nosuch_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"STICKY_PROXY_KEY: .*RuntimeError: boom"):
        load_key_policy("broken_keys_mod.func")
    with pytest.raises(ConfigError, match=r"STICKY_PROXY_KEY: .*nosuch_dep_xyz"):
        load_key_policy("bad_import_mod.func")
    for name in ("broken_keys_mod", "bad_import_mod"):
        sys.modules.pop(name, None)


@settings(max_examples=200, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=80),
        st.builds(
            "{}://{}/{}".format,
            st.sampled_from(["http", "https", "ftp", ""]),
            st.text(max_size=30),
            st.text(max_size=30),
        ),
    )
)
def test_property_key_policies_never_raise(url: str) -> None:
    for policy in (url_key, host_key, domain_key):
        assert isinstance(policy(url), str)


def _generated_urls(count: int, seed: int) -> list[str]:
    """URLs mixing what url_key's fast path takes (lowercase host, plain
    path, sorted plain query) with near misses of every kind."""
    rng = random.Random(seed)
    schemes = ["http", "https", "HTTP", "ftp"]
    hosts = [
        "example.com",
        "Example.com",
        "a-b.c-d.org",
        "127.0.0.1",
        "ex..com",
        "h.",
        "h_1.com",
        "[::1]",
        "sub.example.co.uk",
        "-a.com",
        "xn--bcher-kva.example",
    ]
    ports = ["", ":80", ":8080", ":080", ":0", ":65535", ":65536", ":99999"]
    segments = [
        "a",
        "A",
        "item",
        "7",
        "a_b",
        "a-b",
        "a.b",
        "~u",
        ".",
        "..",
        "",
        "%41",
        "a b",
        "é",
        "a+b",
        "a;p",
        "a:b",
        "a@b",
        "a=b",
        ".a",
        "a..b",
    ]
    names = ["a", "b", "id", "A", "a.b", "x_y", "", "q~", "p+", "é", "%3D", "a b", "-"]
    values = [
        "1",
        "2",
        "0",
        "",
        "x",
        "a/b",
        "a:b",
        "a+b",
        "1.5",
        "%20",
        "x~y",
        "é",
        "a=b",
    ]
    fragments = ["", "#", "#frag", "#a?b/c"]
    urls = []
    for _ in range(count):
        path = "".join("/" + rng.choice(segments) for _ in range(rng.randint(0, 4)))
        query = ""
        if rng.random() < 0.6:
            pairs = [
                (rng.choice(names), rng.choice(values))
                for _ in range(rng.randint(1, 4))
            ]
            if rng.random() < 0.5:
                pairs.sort()
            parts = [k if rng.random() < 0.1 else f"{k}={v}" for k, v in pairs]
            if rng.random() < 0.05:
                parts.append("")
            query = "?" + "&".join(parts)
        urls.append(
            f"{rng.choice(schemes)}://{rng.choice(hosts)}{rng.choice(ports)}"
            f"{path}{query}{rng.choice(fragments)}"
        )
    return urls


def test_the_url_keys_fast_path_agrees_with_canonicalize_url() -> None:
    """url_key skips w3lib's parse for URLs it would give back unchanged;
    on 20,000 generated URLs (a few thousand of them on the fast path, an
    upper-case scheme or host, or a query out of order, among them) the key
    is exactly canonicalize_url's (the URL itself where that raises)."""
    fast = changed = 0
    for url in _generated_urls(20_000, seed=7):
        try:
            expected = canonicalize_url(url, keep_fragments=False)
        except ValueError:
            expected = url
        plain = keys._PLAIN.fullmatch(url.partition("#")[0]) is not None
        fast += plain
        # on the fast path, and put in order or in lower case by it
        changed += plain and expected.rstrip("/") != url.partition("#")[0]
        assert keys.url_key(url) == expected, url
    assert fast > 1500
    assert changed > 800


def test_a_canonical_url_is_its_own_key() -> None:
    """The commonest URL (lower case, a path, no query) is checked by one
    match and returned as it is; on the generated URLs that match, that is
    canonicalize_url's answer, and the ones it must not take (a dot
    segment, an upper-case host, a 5-digit port) still come out canonical."""
    taken = 0
    for generated in _generated_urls(20_000, seed=8):
        url = generated.partition("#")[0].partition("?")[0]  # most have them
        if keys._CANONICAL.fullmatch(url) is None or "/." in url:
            continue
        taken += 1
        assert keys.url_key(url) is url
        assert canonicalize_url(url, keep_fragments=False) == url, url
    assert taken > 300
    for url in ("http://h.example/a/./b", "http://h.example/a/../b"):
        # Dot segments go to w3lib, whose answer depends on its version
        # (2.1.1 keeps them; 2.5 resolves them): the key is w3lib's.
        assert keys.url_key(url) == canonicalize_url(url, keep_fragments=False)
    for url, key in [
        ("http://H.example/a", "http://h.example/a"),
        ("HTTP://h.example/a", "http://h.example/a"),
        ("http://h.example:65535/a", "http://h.example:65535/a"),
        ("http://h.example:65536/a", "http://h.example:65536/a"),  # w3lib raises
        ("http://h.example", "http://h.example/"),
        ("http://h.example/a#f", "http://h.example/a"),
    ]:
        assert keys.url_key(url) == key, url
