"""Session keys and the session id codec.

A *key* names the thing whose requests must share one exit IP (by default the
canonical URL). A *key policy* turns a request into its key. The *codec* turns
``(key, generation)`` into a session id that a provider accepts: the same pair
gives the same id in every process and run, different pairs give different ids,
and the id always fits the provider's alphabet and length, whatever the key
holds, so it can be written into a proxy URL without escaping.

Pure logic: no Scrapy import at module level, no I/O (the public suffix list
used by :func:`domain_key` is the snapshot bundled with tldextract).
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url

from ..errors import ConfigError

__all__ = [
    "ALNUM",
    "KEY_POLICIES",
    "IdRules",
    "KeyFunc",
    "domain_key",
    "host_key",
    "load_key_policy",
    "session_id",
    "url_key",
]

ALNUM = string.ascii_letters + string.digits
#: Characters an id may use at all: RFC 3986 "unreserved", which never need
#: escaping in a URL's userinfo and can never inject a header.
_URL_SAFE = frozenset(ALNUM + "-._~")
_STEM_LEN = 12
_PERSON = b"sticky-proxy"
_PERSON_GEN = b"sticky-proxy/gen"
_RETRY_CHARS = frozenset("r" + string.digits)


@dataclass(frozen=True)
class IdRules:
    """What a provider accepts as a session id.

    *alphabet* lists the allowed characters (a subset of ``A-Za-z0-9-._~``,
    at least two distinct ones); ids are *min_len* to *max_len* long.
    """

    alphabet: str
    min_len: int
    max_len: int
    _charset: frozenset[str] = field(init=False, repr=False, compare=False)
    _digits: str = field(init=False, repr=False, compare=False)
    _stem_len: int = field(init=False, repr=False, compare=False)
    _can_suffix: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        charset = frozenset(self.alphabet)
        if len(charset) < 2:
            raise ValueError("IdRules.alphabet needs at least two distinct characters")
        if not charset <= _URL_SAFE:
            raise ValueError("IdRules.alphabet may only hold A-Za-z0-9 and -._~")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError("IdRules needs 1 <= min_len <= max_len")
        object.__setattr__(self, "_charset", charset)
        # Sorted: the encoding does not depend on how the alphabet is spelled.
        object.__setattr__(self, "_digits", "".join(sorted(charset)))
        stem_len = max(self.min_len, min(_STEM_LEN, self.max_len))
        object.__setattr__(self, "_stem_len", stem_len)
        object.__setattr__(self, "_can_suffix", charset >= _RETRY_CHARS)

    def accepts(self, value: str) -> bool:
        """Whether *value* is a valid id under these rules."""
        return self.min_len <= len(value) <= self.max_len and self._charset.issuperset(
            value
        )


def _encode(data: str, person: bytes, rules: IdRules) -> str:
    digest = hashlib.blake2b(
        data.encode("utf-8", errors="surrogatepass"), digest_size=16, person=person
    ).digest()
    value = int.from_bytes(digest, "big")
    digits = rules._digits
    base = len(digits)
    out = []
    for _ in range(rules._stem_len):  # least significant digit first
        value, rem = divmod(value, base)
        out.append(digits[rem])
    return "".join(out)


def session_id(key: str, generation: int, rules: IdRules) -> str:
    """The session id for *key* at re-roll *generation* under *rules*.

    - Generation 0 of a key that already fits the rules is the key itself
      (a YouTube video id such as ``dQw4w9WgXcQ`` is used as is).
    - Otherwise the *stem* is the blake2b-128 hash of the key (UTF-8, lone
      surrogates kept via ``surrogatepass``; personalised ``sticky-proxy``)
      written in base ``len(alphabet)`` with the alphabet's characters in
      sorted order, least significant digit first, cut to
      ``L = clamp(12, min_len, max_len)`` characters. 12 base-62 characters
      carry 71 bits. IPRoyal's "exactly 8" rule leaves 47.6 bits: about one
      chance in 40,000 that two of 100,000 keys share an exit.
    - Generation ``n > 0`` is ``stem + "r" + str(n)`` when ``r`` and the digits
      are allowed and it fits *max_len*; otherwise the L-character encoding of
      ``key + "\\0" + str(n)`` hashed under a second personalisation
      (``sticky-proxy/gen``), so it can never equal generation 0 of the key
      ``key + "\\0" + str(n)``.

    Deterministic (never uses :func:`hash`), so every process agrees.
    """
    if not isinstance(key, str):
        raise TypeError(f"session key must be a str, not {type(key).__name__}")
    if generation < 0:
        raise ValueError(f"generation must be >= 0, got {generation}")
    if generation == 0:
        if rules.accepts(key):
            return key
        return _encode(key, _PERSON, rules)
    if rules._can_suffix:
        retry = f"{_encode(key, _PERSON, rules)}r{generation}"
        if len(retry) <= rules.max_len:
            return retry
    return _encode(f"{key}\x00{generation}", _PERSON_GEN, rules)


# -- key policies -------------------------------------------------------------

KeyFunc = Callable[[Any], str]


def url_key(url: str) -> str:
    """The canonical URL: sorted query, no fragment, normalised escapes."""
    try:
        return canonicalize_url(url, keep_fragments=False)
    except ValueError:  # e.g. a broken IPv6 literal: the URL is its own key
        return url


def _hostname(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def host_key(url: str) -> str:
    """The lowercased host name, without port or trailing dot.

    IP literals are returned as they are (IPv6 without brackets); a URL
    without a host is its own key.
    """
    return _hostname(url) or url


@lru_cache(maxsize=1)
def _extractor() -> Any:
    import tldextract

    # No suffix list URLs and no cache dir: the bundled snapshot, no network.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True
    )


@lru_cache(maxsize=4096)
def _registrable_domain(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    result = _extractor().extract_str(host)
    domain = getattr(result, "top_domain_under_public_suffix", None)
    if domain is None:  # tldextract < 5.3
        domain = result.registered_domain
    return str(domain) or host


def domain_key(url: str) -> str:
    """The registrable domain (``a.b.example.co.uk`` -> ``example.co.uk``).

    Uses the ICANN part of the public suffix list bundled with tldextract,
    never the network. IP addresses, ``localhost`` and hosts without a public
    suffix fall back to the host.
    """
    host = _hostname(url)
    return _registrable_domain(host) if host else url


def _request_url_key(request: Any) -> str:
    return url_key(request.url)


def _request_host_key(request: Any) -> str:
    return host_key(request.url)


def _request_domain_key(request: Any) -> str:
    return domain_key(request.url)


KEY_POLICIES: Mapping[str, KeyFunc] = MappingProxyType(
    {
        "url": _request_url_key,
        "host": _request_host_key,
        "domain": _request_domain_key,
    }
)
_ACCEPTED = (
    "'url', 'host', 'domain', a callable, or a dotted path to a callable "
    "(e.g. 'myproject.keys.by_video_id')"
)


def _import_object(path: str) -> Any:
    """Import ``pkg.module.attr`` (or ``pkg.module:attr``); ConfigError if not."""
    setting = "STICKY_PROXY_KEY"
    module_path, sep, attr_path = path.partition(":")
    if not sep:
        module_path, _, attr_path = path.rpartition(".")
    if not module_path or not attr_path:
        raise ConfigError(setting, f"unknown key policy {path!r}; use {_ACCEPTED}")
    # Longest importable module prefix, so "pkg.mod.Class.method" works too.
    names = module_path.split(".")
    attrs = attr_path.split(".")
    while True:
        name = ".".join(names)
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if len(names) > 1 and (name == missing or name.startswith(missing + ".")):
                attrs.insert(0, names.pop())
                continue
            raise ConfigError(
                setting,
                f"cannot import {path!r} (tried module {name!r}: {exc}); use "
                f"{_ACCEPTED}",
            ) from exc
        except Exception as exc:
            raise ConfigError(
                setting,
                f"importing module {name!r} for {path!r} failed with "
                f"{type(exc).__name__}: {exc}",
            ) from exc
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(
                setting,
                f"cannot import {path!r}: {name!r} has no attribute {attr!r}; use "
                f"{_ACCEPTED}",
            ) from None
        name = f"{name}.{attr}"
    return obj


def load_key_policy(value: str | Callable[[Any], str]) -> KeyFunc:
    """The key function ``request -> str`` for a STICKY_PROXY_KEY value.

    ``"url"``, ``"host"`` and ``"domain"`` apply the policy of the same name
    to ``request.url``; a callable is used as is; any other string is a
    dotted path to a callable, imported with importlib.
    """
    setting = "STICKY_PROXY_KEY"
    if isinstance(value, str):
        name = value.strip()
        policy = KEY_POLICIES.get(name.lower())
        if policy is not None:
            return policy
        if not name:
            raise ConfigError(setting, f"is empty; use {_ACCEPTED}")
        obj = _import_object(name)
        if not callable(obj):
            raise ConfigError(
                setting,
                f"{name!r} is a {type(obj).__name__}, not a callable; use {_ACCEPTED}",
            )
        return obj
    if callable(value):
        return value
    kind = type(value).__name__
    raise ConfigError(
        setting, f"expected a string or a callable, got {kind}; use {_ACCEPTED}"
    )
