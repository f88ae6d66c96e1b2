"""Checking a proxy URL's scheme, credentials part and host:port.

Every problem is reported through ``fail(problem)``, which the caller turns
into a ConfigError naming its setting; nothing here echoes the URL, which
may hold a password.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from ..errors import ConfigError

Fail = Callable[[str], ConfigError]

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_.])?")


def split_proxy_url(
    url: object, gateway: str | None, fail: Fail
) -> tuple[str, str, str]:
    """``(scheme, userinfo, host:port)`` of a proxy URL, checked."""
    if not isinstance(url, str) or not url.strip():
        raise fail("must be a non-empty proxy URL such as http://user:pass@host:port")
    url = url.strip()
    if url[0] in "[{\"'":
        raise fail(
            f"starts with {url[0]!r}: expected one bare proxy URL such as "
            "http://user:pass@host:port, not JSON or quoted text; several proxies "
            "go in STICKY_PROXY_LIST"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise fail("contains whitespace or control characters; percent-encode them")
    match = _SCHEME_RE.match(url)
    scheme = match.group(1).lower() if match else "http"
    rest = url[match.end() :] if match else url
    hint = f" (e.g. {gateway})" if gateway else ""
    if scheme.startswith("socks"):
        raise fail(
            f"{scheme}:// proxies are not supported by Scrapy; use the provider's "
            f"http gateway{hint} or a local http-to-socks bridge"
        )
    if scheme not in ("http", "https"):
        raise fail(f"unsupported proxy scheme {scheme!r}; use http:// or https://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in tail:
        raise fail(
            "the credentials seem to contain '/', '?' or '#': percent-encode them "
            "(%2F, %3F, %23)"
        )
    if tail not in ("", "/"):
        raise fail("must not have a path, query or fragment after host:port")
    userinfo, _, hostport = netloc.rpartition("@")
    return scheme, userinfo, parse_hostport(hostport, fail)


def parse_hostport(text: str, fail: Fail) -> str:
    """Normalised ``host:port``; raises ``fail(problem)`` (never echoes input)."""
    if "{" in text or "}" in text:
        raise fail(
            "placeholders may only appear in the username or password, not in host:port"
        )
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            bracket = ""
        if not bracket or (after and not after.startswith(":")):
            raise fail("has an invalid IPv6 host (write it as [::1]:port)")
        host, port = f"[{host}]", after[1:]
    else:
        host, _, port = text.partition(":")
        if ":" in port:
            raise fail("an IPv6 host must be written in brackets, e.g. [::1]:8080")
        if host and not _HOST_RE.fullmatch(host):
            raise fail("the host has invalid characters (write IDN hosts as punycode)")
    if not host:
        raise fail("has no host; expected http://user:pass@host:port")
    if not port:
        raise fail(
            "has no port: write it as http://user:pass@host:PORT (proxy URLs have "
            "no default port)"
        )
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise fail("the port must be a number from 1 to 65535")
    return f"{host.lower()}:{int(port)}"
