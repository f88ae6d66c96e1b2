"""HTTP/1.1 plumbing shared by the sandbox's gateway and demo site.

Just enough of the protocol for loopback tests: message heads, bodies framed
by chunked, Content-Length or EOF, keep-alive decisions, and the bookkeeping
that lets a server drop all its connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BACKLOG = 1024  # benchmarks open many connections at once


class BadRequest(ValueError):
    """The peer sent something that is not HTTP/1.1 we understand."""


async def read_head(reader: asyncio.StreamReader) -> tuple[str, Headers] | None:
    """Read a start line and headers; None on a clean EOF before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest("truncated head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("head too large") from exc
    lines = raw.decode("latin-1").lstrip("\r\n").split("\r\n")
    headers: Headers = []
    for line in filter(None, lines[1:]):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def split_request_line(line: str) -> tuple[str, str, str]:
    """(method, target, version) of a request line."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("bad request line")
    return parts[0], parts[1], parts[2]


def get_header(headers: Headers, name: str) -> str | None:
    """Value of the first header called ``name`` (case-insensitive)."""
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def has_token(headers: Headers, name: str, token: str) -> bool:
    """Whether a comma-separated header such as Connection lists ``token``."""
    return any(
        k.lower() == name and token in (t.strip().lower() for t in v.split(","))
        for k, v in headers
    )


async def read_body(
    reader: asyncio.StreamReader, headers: Headers, *, to_eof: bool = False
) -> bytes:
    """Read a body framed by chunked, Content-Length or (``to_eof``) EOF."""
    if has_token(headers, "transfer-encoding", "chunked"):
        parts: list[bytes] = []
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest("bad chunk size") from exc
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are dropped
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = get_header(headers, "content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("bad Content-Length")
        return await reader.readexactly(int(length))
    return await reader.read() if to_eof else b""


def wants_close(version: str, headers: Headers) -> bool:
    """Whether the connection must close after this message."""
    if has_token(headers, "connection", "close"):
        return True
    return version == "HTTP/1.0" and not has_token(headers, "connection", "keep-alive")


def build_response(
    status: int, headers: Headers, body: bytes, *, length: bool = True
) -> bytes:
    """Serialise a response; adds Content-Length unless ``length`` is False."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def check_loopback_bind(host: str) -> None:
    """Refuse to listen anywhere but 127.0.0.0/8."""
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"the sandbox binds only 127.0.0.0/8, not {host}")


class ConnectionTracker:
    """Runs connection handlers and can drop all their connections at once."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.peak = 0  # most connections open at once (tests of concurrency)

    def wrap(self, handler: Handler) -> Handler:
        async def serve(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._conns[task] = writer
                self.peak = max(self.peak, len(self._conns))
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                pass  # only drop_all() cancels; 3.11 streams log cancelled handlers
            except (BadRequest, asyncio.IncompleteReadError, OSError) as exc:
                logger.debug("%s connection ended: %r", self._name, exc)
            except Exception:
                logger.debug("%s connection failed", self._name, exc_info=True)
            finally:
                if task is not None:
                    self._conns.pop(task, None)
                writer.close()

        return serve

    async def drop_all(self) -> None:
        conns, self._conns = self._conns, {}
        for writer in conns.values():
            writer.transport.abort()  # handlers see EOF and finish
        if conns:
            _, stuck = await asyncio.wait(conns, timeout=2)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=2)


async def close_server(server: asyncio.AbstractServer) -> None:
    server.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)
