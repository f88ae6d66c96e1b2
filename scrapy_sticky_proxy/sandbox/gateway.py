"""The sandbox's forward proxy: one loopback exit address per proxy session."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._credentials import decode_basic, match_credentials
from ._http import (
    BACKLOG,
    BadRequest,
    ConnectionTracker,
    Headers,
    build_response,
    check_loopback_bind,
    close_server,
    get_header,
    read_body,
    read_head,
    split_request_line,
    wants_close,
)
from ._upstream import Stream, connect_from, exchange, tunnel, upstream_request

logger = logging.getLogger(__name__)

MODES = ("normal", "refuse", "hang", "reset", "drop")
_LINGER_0 = struct.pack("ii", 1, 0)
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_CHALLENGE = ("Proxy-Authenticate", 'Basic realm="sandbox"')


@dataclass(frozen=True)
class ProxyRecord:
    """One request the gateway answered."""

    time: float
    client_conn_id: int
    method: str  # "CONNECT" or the HTTP method
    target: str  # "host:port" for CONNECT, else the absolute URL
    session: str  # "" if none
    exit_ip: str  # "" if the request never left the gateway
    status: int


# Shared by every gateway in the process, so that several sandboxes (a static
# proxy list in a test) never hand out the same exit address.
_EXIT_INDEX = itertools.count()


def exit_address(index: int) -> str:
    """The ``index``-th exit: 127.0.1.1, 127.0.1.2 ... (octets 0/255 skipped)."""
    rest, low = divmod(index, 254)
    high, mid = divmod(rest, 254)
    if high > 254:
        raise RuntimeError("the sandbox ran out of exit addresses")
    return f"127.{high}.{mid + 1}.{low + 1}"


def loopback_target(host: str) -> str | None:
    """The IPv4 address to connect to if ``host`` is loopback, else None."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(ip) if ip.version == 4 and ip.is_loopback else None


def _parse_target(method: str, target: str) -> tuple[str, int]:
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


@dataclass
class _Answer:
    status: int
    exit_ip: str = ""
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    length: bool = True  # add Content-Length (False: HEAD, 204, 304)
    tunnel: Stream | None = None  # CONNECT established


def _text(status: int, message: str, exit_ip: str = "") -> _Answer:
    headers = [_CHALLENGE, _TEXT] if status == 407 else [_TEXT]
    return _Answer(status, exit_ip, headers, message.encode() + b"\n")


@dataclass
class _Conn:
    id: int
    pinned: str | None = None  # the exit, with pin_per_connection


class Gateway:
    """Forward proxy (plain HTTP and CONNECT) for loopback targets only."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        pin_per_connection: bool = False,
        session_ttl: float | None = None,
        accept_any_credentials: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.username = username
        self._password = password
        self.pin_per_connection = pin_per_connection
        self.session_ttl = session_ttl
        self.accept_any_credentials = accept_any_credentials
        self.mode = "normal"
        self.log: list[ProxyRecord] = []
        self.auth_failures = 0
        self.connections = 0
        self.host = "127.0.0.1"
        self.port = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, float]] = {}
        self._next_conn = 0
        self._server: asyncio.AbstractServer | None = None
        self._closed = False
        self._conns = ConnectionTracker("gateway")

    def __repr__(self) -> str:
        return f"<Gateway {self.host}:{self.port} user={self.username!r}>"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host`` (127.0.0.0/8 only); call on the event loop."""
        check_loopback_bind(host)
        self.host = host
        self._server = await asyncio.start_server(
            self._conns.wrap(self._serve), host, port, backlog=BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: str) -> None:
        """Switch to "normal", "refuse" (listening socket closed), "hang",
        "reset" (every connection is accepted, counted and reset at once) or
        "drop" (each request is read, then its connection reset unanswered)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        if mode == "refuse":
            await self._unlisten()
        elif self._server is None and not self._closed:
            await self.start(self.host, self.port)

    async def close(self) -> None:
        self._closed = True
        await self._unlisten()

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # Stop accepting first and let connections already accepted be
            # set up: closing the server between the two (asyncio) left such
            # a socket open and unanswered, its client hanging until timeout.
            loop = asyncio.get_running_loop()
            for sock in getattr(server, "sockets", ()):
                loop.remove_reader(sock.fileno())
            for _ in range(3):
                await asyncio.sleep(0)
            server.close()
        await self._conns.drop_all()
        if server is not None:
            await close_server(server)

    def reset(self) -> None:
        """Forget records, counters and sessions (exit numbering goes on)."""
        with self._lock:
            self.log = []
            self.auth_failures = 0
            self.connections = 0
            self._conns.peak = 0
            self._sessions.clear()

    @property
    def peak_connections(self) -> int:
        """The most client connections that were open at once."""
        return self._conns.peak

    def sessions(self) -> dict[str, str]:
        """Snapshot of session id -> current exit address."""
        with self._lock:
            return {key: ip for key, (ip, _) in self._sessions.items()}

    def exit_for(self, session: str) -> str:
        """The session's exit, assigning a fresh one if none or expired."""
        now = self._clock()
        with self._lock:
            current = self._sessions.get(session)
            ttl = self.session_ttl
            if current is not None and (ttl is None or now - current[1] < ttl):
                return current[0]
            ip = exit_address(next(_EXIT_INDEX))
            self._sessions[session] = (ip, now)
        logger.debug("gateway session %r gets exit %s", session, ip)
        return ip

    def authenticate(self, header: str | None) -> str | None:
        """Session id ("" if none) for a Proxy-Authorization value, or None."""
        creds = decode_basic(header)
        if self.accept_any_credentials:
            return creds[0] if creds is not None else ""
        if creds is None:
            return None
        user, password = creds
        return match_credentials(
            user, password, username=self.username, expected_password=self._password
        )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "refuse":  # mode set directly, without set_mode()
            writer.transport.abort()
            return
        with self._lock:
            self.connections += 1
            self._next_conn += 1
            conn = _Conn(self._next_conn)
        if self.mode == "reset":
            _reset(writer)
            return
        while True:
            if self.mode == "hang":
                while await reader.read(65536):
                    pass  # accept, read, never answer
                return
            head = await read_head(reader)
            if head is None:
                return
            if self.mode == "drop":
                _reset(writer)
                return
            if self.mode != "hang" and not await self._request(
                conn, reader, writer, head
            ):
                return

    async def _request(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: tuple[str, Headers],
    ) -> bool:
        """Answer one request; True to keep the client connection open."""
        method, target, version = split_request_line(head[0])
        headers = head[1]
        body = await read_body(reader, headers)
        close = method == "CONNECT" or wants_close(version, headers)
        session = self.authenticate(get_header(headers, "proxy-authorization"))
        if session is None:
            with self._lock:
                self.auth_failures += 1
            answer = _text(407, "proxy authentication required")
        else:
            answer = await self._answer(
                conn, method, target, headers=headers, body=body, session=session
            )
        rec = ProxyRecord(
            self._clock(), conn.id, method, target, session or "",
            answer.exit_ip, answer.status,
        )  # fmt: skip
        with self._lock:
            self.log.append(rec)
        logger.debug("gateway %s", rec)
        if answer.tunnel is not None:
            try:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await tunnel((reader, writer), answer.tunnel)
            finally:
                answer.tunnel[1].close()
            return False
        out = [*answer.headers, ("Connection", "close")] if close else answer.headers
        writer.write(
            build_response(answer.status, out, answer.body, length=answer.length)
        )
        await writer.drain()
        return not close

    async def _answer(
        self,
        conn: _Conn,
        method: str,
        target: str,
        *,
        headers: Headers,
        body: bytes,
        session: str,
    ) -> _Answer:
        try:
            host, port = _parse_target(method, target)
        except BadRequest:
            return _text(400, "CONNECT host:port or an absolute http:// URL needed")
        address = loopback_target(host)
        if address is None:  # refused before any connection attempt
            return _text(403, "the sandbox only reaches loopback targets")
        if not self.pin_per_connection:
            exit_ip = self.exit_for(session)
        elif conn.pinned is None:
            exit_ip = conn.pinned = self.exit_for(session)
        else:
            exit_ip = conn.pinned
        try:
            stream = await self._open_upstream(address, port, exit_ip)
            if method == "CONNECT":
                return _Answer(200, exit_ip, tunnel=stream)
            try:
                request = upstream_request(method, target, headers, body)
                status, out, data, length = await exchange(
                    stream, request, head=method == "HEAD"
                )
                return _Answer(status, exit_ip, out, data, length=length)
            finally:
                stream[1].close()
        except (OSError, BadRequest, asyncio.IncompleteReadError) as exc:
            logger.debug("gateway upstream %s failed: %r", target, exc)
            return _text(502, "upstream failed", exit_ip)

    async def _open_upstream(self, host: str, port: int, exit_ip: str) -> Stream:
        """Connect to host:port from source address ``exit_ip``."""
        return await connect_from(host, port, exit_ip)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, not a FIN (linger 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    writer.transport.abort()
