"""The gateway's upstream side: the target (loopback only), connecting from an
exit address, the request it sends on, the response it reads back, and the
bytes of a CONNECT tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import sys
from urllib.parse import urlsplit

from ._http import BadRequest, Headers, get_header, read_body, read_head

# fmt: off
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length",  # recomputed
})
# fmt: on
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def loopback_target(host: str) -> str | None:
    """The IPv4 address to connect to if ``host`` is loopback, else None."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(ip) if ip.version == 4 and ip.is_loopback else None


def parse_target(method: str, target: str) -> tuple[str, int]:
    """(host, port) of a CONNECT authority or an absolute http:// URL."""
    try:
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return host, int(port)
        else:
            url = urlsplit(target)
            if url.scheme == "http" and url.hostname:
                return url.hostname, url.port or 80
    except ValueError:
        pass
    raise BadRequest(f"bad proxy target for {method}")


def upstream_request(method: str, target: str, headers: Headers, body: bytes) -> bytes:
    """The origin-form request to send upstream, without proxy headers."""
    url = urlsplit(target)
    dropped = set(_HOP_BY_HOP)
    for key, value in headers:
        if key.lower() == "connection":
            dropped.update(t.strip().lower() for t in value.split(","))
    out = [(k, v) for k, v in headers if k.lower() not in dropped]
    if get_header(out, "host") is None:
        out.insert(0, ("Host", url.netloc.rpartition("@")[2]))
    if body or get_header(headers, "content-length") is not None:
        out.append(("Content-Length", str(len(body))))
    out.append(("Connection", "close"))
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in out)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def connect_from(host: str, port: int, exit_ip: str) -> Stream:
    """Connect to host:port from source address ``exit_ip``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if sys.platform == "linux":  # port picked at connect(): no bind clashes
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((exit_ip, 0))
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def exchange(
    stream: Stream, request: bytes, head: bool
) -> tuple[int, Headers, bytes, bool]:
    """Send one request upstream; (status, headers, body, add Content-Length)."""
    reader, writer = stream
    writer.write(request)
    await writer.drain()
    while True:
        response = await read_head(reader)
        if response is None:
            raise BadRequest("upstream closed without answering")
        try:
            status = int(response[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise BadRequest("bad upstream status line") from exc
        if not 100 <= status < 200:
            break
    headers = [(k, v) for k, v in response[1] if k.lower() not in _HOP_BY_HOP]
    if head or status in (204, 304):
        length = get_header(response[1], "content-length")
        headers += [("Content-Length", length)] if length is not None else []
        return status, headers, b"", False
    body = await read_body(reader, response[1], to_eof=True)
    return status, headers, body, True


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def tunnel(client: Stream, upstream: Stream) -> None:
    """Copy bytes both ways until either side closes."""
    tasks = {
        asyncio.ensure_future(_pipe(client[0], upstream[1])),
        asyncio.ensure_future(_pipe(upstream[0], client[1])),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
