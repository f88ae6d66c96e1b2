"""The sandbox's demo site: items, follow-up parts, client address and its
country (:mod:`._geo`), bans (by the rules of :mod:`.ban_rules`)."""

from __future__ import annotations

import asyncio
import datetime
import html
import ipaddress
import json
import logging
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ._geo import country_of
from ._http import (
    BACKLOG,
    ConnectionTracker,
    Headers,
    build_response,
    check_loopback_bind,
    close_server,
    read_body,
    read_head,
    split_request_line,
    wants_close,
)
from .ban_rules import (
    IP_COOKIE,
    WARM_COOKIE,
    WARMUP_PATH,
    BanRule,
    ban_answer,
    foreign_ip_cookie,
)

logger = logging.getLogger(__name__)

_REDIRECT_RE = re.compile(r"^/r/(\d{1,9})/?$")
_ITEM_RE = re.compile(r"^/item/(\d{1,9})(?:/(detail|media|thumb))?/?$")
_HTML = ("Content-Type", "text/html; charset=utf-8")
# /item/{i}?embed=1 adds what a browser fetches by itself: an image (the
# thumb part) and a script that fetches the media part and shows the client
# address the site saw for it in #media (data-client set once it is there).
_EMBED = """
<img id="thumb" src="/item/{item}/thumb" alt="">
<p id="media"></p>
<script>
fetch("/item/{item}/media").then(r => r.json()).then(d => {{
  const m = document.getElementById("media");
  m.textContent = d.client;
  m.dataset.client = d.client;
}});
</script>"""
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


@dataclass(frozen=True)
class Hit:
    """One request the demo site received."""

    time: float
    scheme: str  # "http" or "https"
    method: str
    path: str  # with the query
    client_ip: str
    client_port: int
    status: int  # 0: dropped unanswered ("reset" or "hang")
    proxy_authorization: bool  # a Proxy-Authorization header reached the site
    headers: dict[str, str] = field(default_factory=dict)  # lowercased names


def make_tls_context() -> tuple[ssl.SSLContext, bytes]:
    """A server context with a fresh self-signed EC cert for 127.0.0.1/localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain wants files
        (Path(tmp) / "cert.pem").write_bytes(cert_pem)
        (Path(tmp) / "key.pem").write_bytes(key_pem)
        ctx.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
    return ctx, cert_pem


class DemoSite:
    """Items at /item/{i} with three follow-up parts each; optional bans."""

    def __init__(
        self,
        *,
        items: int = 50,
        ban_rule: BanRule | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.items = items
        self.ban_rule = ban_rule
        self.ip_cookies = False  # see ban_rules.foreign_ip_cookie
        self.hits: list[Hit] = []
        self.cert_pem = b""
        self.port = 0
        self.https_port = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._servers: list[asyncio.AbstractServer] = []
        self._conns = ConnectionTracker("site")

    async def start(self, host: str = "127.0.0.1") -> None:
        """Listen for http and https on free ports of ``host``."""
        check_loopback_bind(host)
        ctx, self.cert_pem = make_tls_context()

        async def http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self._serve(r, w, "http")

        async def https(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self._serve(r, w, "https")

        wrap = self._conns.wrap
        plain = await asyncio.start_server(wrap(http), host, 0, backlog=BACKLOG)
        tls = await asyncio.start_server(wrap(https), host, 0, backlog=BACKLOG, ssl=ctx)
        self._servers = [plain, tls]
        self.port = plain.sockets[0].getsockname()[1]
        self.https_port = tls.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        await self._conns.drop_all()
        for server in self._servers:
            await close_server(server)

    def reset(self) -> None:
        with self._lock:
            self.hits = []
        self.ban_rule = None
        self.ip_cookies = False

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str
    ) -> None:
        ip, port = writer.get_extra_info("peername")[:2]
        while (head := await read_head(reader)) is not None:
            method, target, version = split_request_line(head[0])
            await read_body(reader, head[1])
            seen: dict[str, str] = {}
            for key, value in head[1]:
                old = seen.get(key.lower())
                seen[key.lower()] = value if old is None else f"{old}, {value}"
            rule = self.ban_rule
            # A rule with a true "cookies" reads the Cookie header too.
            extra = (seen.get("cookie", ""),) if getattr(rule, "cookies", 0) else ()
            kind = rule(ip, target, *extra) if rule is not None else None
            if self.ip_cookies and foreign_ip_cookie(ip, seen.get("cookie", "")):
                kind = kind or "403"
            if kind in ("reset", "hang"):
                self._record(
                    Hit(self._clock(), scheme, method, target, ip, port, 0,
                        "proxy-authorization" in seen, seen)
                )  # fmt: skip
                if kind == "hang":  # until the client gives up (or close())
                    while await reader.read(65536):
                        pass
                writer.transport.abort()
                return
            host = seen.get("host", "")
            status, headers, body = self._respond(method, target, ip, kind, host)
            if self.ip_cookies:
                headers.append(("Set-Cookie", f"{IP_COOKIE}={ip}; Path=/"))
            if wants_close(version, head[1]):
                headers.append(("Connection", "close"))
            self._record(
                Hit(self._clock(), scheme, method, target, ip, port, status,
                    "proxy-authorization" in seen, seen)
            )  # fmt: skip
            writer.write(build_response(status, headers, body))
            await writer.drain()
            if wants_close(version, head[1]):
                return

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)
        logger.debug("site %s", hit)

    def _respond(
        self,
        method: str,
        target: str,
        client_ip: str,
        kind: str | None,
        host: str = "",
    ) -> tuple[int, Headers, bytes]:
        url = urlsplit(target)
        if url.path == "/captcha" or kind == "captcha":
            captcha = '<h1>Check</h1>\n<div class="g-recaptcha">Are you a robot?</div>'
            return 200, [_HTML], _page("Just a moment", captcha)
        if kind is not None:
            return ban_answer(kind, url.path)
        if url.path == WARMUP_PATH:  # a cookie bound to the address
            cookie = ("Set-Cookie", f"{WARM_COOKIE}={client_ip}; Path=/")
            return 200, [_TEXT, cookie], b"warm\n"
        if method not in ("GET", "POST"):
            return 405, [("Allow", "GET, POST"), _TEXT], b"method not allowed\n"
        redirect = _REDIRECT_RE.match(url.path)
        if redirect is not None:
            # /r/{i}?s=307 -> /item/{i} with that status (default 302).
            query = parse_qs(url.query)
            code = query.get("s", ["302"])[0]
            status = int(code) if code in ("301", "302", "303", "307", "308") else 302
            location = f"/item/{redirect.group(1)}"
            if "x" in query:  # ?x=1: across hosts, 127.0.0.1 <-> localhost
                name, _, port = host.rpartition(":")
                other = "localhost" if name == "127.0.0.1" else "127.0.0.1"
                scheme = url.scheme or (
                    "https" if port == str(self.https_port) else "http"
                )
                location = f"{scheme}://{other}:{port}{location}"
            return status, [("Location", location), _TEXT], b"moved\n"
        if url.path == "/":
            args = parse_qs(url.query)
            n = args.get("n", [""])[0]
            count = int(n) if n.isdigit() else self.items
            links = "\n".join(
                f'<li><a class="item" href="/item/{i}">Item {i}</a></li>'
                for i in range(count)
            )
            return 200, [_HTML], _page("Items", f"<h1>Items</h1>\n<ul>\n{links}\n</ul>")
        match = _ITEM_RE.match(url.path)
        if match is None:
            return 404, [_TEXT], b"not found\n"
        item, part = int(match.group(1)), match.group(2)
        if part is None:
            links = "\n".join(
                f'<a class="follow" href="/item/{item}/{p}">{p}</a>'
                for p in ("detail", "media", "thumb")
            )
            client = (
                f'<p>Seen from <span id="client">{html.escape(client_ip)}</span></p>'
            )
            if country := country_of(client_ip):
                client += (
                    f'\n<p>In <span id="country">{html.escape(country)}</span></p>'
                )
            body = f"<h1>Item {item}</h1>\n{client}\n{links}"
            headers: Headers = [_HTML]
            if "embed" in parse_qs(url.query):
                # For browsers: requests the page makes itself, and a cookie
                # that the browser's follow-ups carry back.
                body += _EMBED.format(item=item)
                headers.append(("Set-Cookie", f"item={item}; Path=/"))
            return 200, headers, _page(f"Item {item}", body)
        doc = {"item": item, "part": part, "client": client_ip}
        if country := country_of(client_ip):
            doc["country"] = country
        return 200, [("Content-Type", "application/json")], json.dumps(doc).encode()


def _page(title: str, body: str) -> bytes:
    return (
        f"<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    ).encode()
