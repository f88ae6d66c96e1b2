"""Session keys and the key policies that derive them from requests.

A *key* names the thing whose requests must share one exit IP (by default the
canonical URL). A *key policy* turns a request into its key; the session id
codec (:mod:`.ids`) turns the key into a session id.

Pure logic: no Scrapy import at module level, no I/O (the public suffix list
used by :func:`domain_key` is the snapshot bundled with tldextract).
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url

from ..errors import ConfigError

KeyFunc = Callable[[Any], str]


# A URL whose canonical form needs no parse: scheme and host (of ASCII
# letters, digits and "-") put in lower case, a port without leading zeros,
# a path and a query of unreserved characters only, the query's pairs each
# with one "=" (put in order). Most crawled URLs are of this kind, and
# w3lib's full parse (about 6 us) was most of a request's routing cost
# (python -m bench --only per-request); tests/test_keys.py checks the two
# agree on generated URLs of both kinds.
_PLAIN = re.compile(
    r"((?i:https?)://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::([1-9][0-9]{0,4}))?)"
    r"(/[A-Za-z0-9_~./-]*)?(?:\?([A-Za-z0-9_.~=&-]+))?"
)


# The commonest of those: already canonical as it is (a lower-case scheme
# and host, a port of at most 4 digits, a path without "/." and no query
# or fragment), a subset of _PLAIN for which url_key's answer is the URL
# itself. One match, and the key is the request's own string: about half
# a new key's cost (python -m bench.per_request).
_CANONICAL = re.compile(
    # No possessive quantifiers (Python 3.11+); the parts are disjoint, so
    # plain ones cannot backtrack far.
    r"https?://[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::[1-9][0-9]{0,3})?/[A-Za-z0-9_~./-]*"
)


def url_key(url: str) -> str:
    """The canonical URL: sorted query, no fragment, normalised escapes."""
    if _CANONICAL.fullmatch(url) is not None and "/." not in url:
        return url
    plain = _PLAIN.fullmatch(url.partition("#")[0])
    if plain is not None:
        origin, port, path, query = plain.groups()
        valid_port = port is None or len(port) < 5 or int(port) <= 65535
        if valid_port and _plain_path(path):
            if query is None:
                return origin.lower() + (path or "/")
            query = _plain_query(query)
            if query is not None:
                return f"{origin.lower()}{path or '/'}?{query}"
    try:
        return canonicalize_url(url, keep_fragments=False)
    except ValueError:  # e.g. a broken IPv6 literal: the URL is its own key
        return url


def _plain_path(path: str | None) -> bool:
    """No dot segment ("/./", "/../", a trailing "/." or "/..")."""
    return path is None or "/." not in path


def _plain_query(query: str) -> str | None:
    """The query with its pairs in order (as w3lib sorts them: by name, then
    value), or None if a pair is not ``name=value`` with a name."""
    pairs = [pair.split("=") for pair in query.split("&")]
    if not all(len(p) == 2 and p[0] for p in pairs):
        return None
    ordered = sorted(pairs)
    return query if ordered == pairs else "&".join(f"{k}={v}" for k, v in ordered)


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


registrable_domain = _registrable_domain


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
