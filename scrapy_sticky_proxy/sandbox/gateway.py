"""The sandbox's forward proxy: one loopback exit address per proxy session.

The gateway authenticates each request, gives its session an exit address
(in the country its credentials ask for, in any preset's format: :mod:`._geo`),
forwards it upstream from that address (:mod:`._upstream`) and records it;
listening and the fault modes are :mod:`._listener`'s.

A latency model makes it a gateway far away: ``connect_latency`` seconds
before a new client connection's first request is read (the round trip to
the provider and its session set-up), ``request_latency`` before each
request goes upstream (a CONNECT once: the requests inside a tunnel are not
seen). Both are awaited on the sandbox's loop (``sleep``, asyncio.sleep
unless a test injects one), never blocking other connections.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._credentials import credential_country, decode_basic, match_credentials
from ._geo import place_exit
from ._http import (
    BadRequest,
    Headers,
    build_response,
    get_header,
    read_body,
    split_request_line,
    wants_close,
)
from ._listener import Conn, Listener
from ._upstream import (
    Stream,
    connect_from,
    exchange,
    loopback_target,
    parse_target,
    tunnel,
    upstream_request,
)

logger = logging.getLogger(__name__)

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
    country: str = ""  # what the credentials asked for ("" for anywhere)


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


class Gateway(Listener):
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
        tls: bool = False,
        connect_latency: float = 0.0,
        request_latency: float = 0.0,
        requests_per_connection: int = 0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__("gateway", tls=tls)
        if not (connect_latency >= 0 and request_latency >= 0):
            raise ValueError("the gateway's latencies are seconds, >= 0")
        if type(requests_per_connection) is not int or requests_per_connection < 0:
            raise ValueError("requests_per_connection is an int >= 0 (0: no limit)")
        # Like nginx's keepalive_requests: the Nth answer on a client
        # connection says "Connection: close" and the connection ends.
        self.requests_per_connection = requests_per_connection
        self.connect_latency = connect_latency
        self.request_latency = request_latency
        self._sleep = sleep
        self.connections_accepted = 0  # client connections, reset by reset()
        self.username = username
        self._password = password
        self.pin_per_connection = pin_per_connection
        self.session_ttl = session_ttl
        self.accept_any_credentials = accept_any_credentials
        self.log: list[ProxyRecord] = []
        self.auth_failures = 0
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"<Gateway {self.host}:{self.port} user={self.username!r}>"

    def reset(self) -> None:
        """Forget records, counters and sessions (exit numbering goes on)."""
        with self._lock:
            self.log = []
            self.auth_failures = 0
            self.connections = 0
            self.connections_accepted = 0
            self._conns.peak = 0
            self._sessions.clear()

    def sessions(self) -> dict[str, str]:
        """Snapshot of session id -> current exit address."""
        with self._lock:
            return {key: ip for key, (ip, _) in self._sessions.items()}

    def exit_for(self, session: str, country: str = "") -> str:
        """The session's exit (in *country*), assigning a fresh one if none
        or expired. A session asked for in two countries has two exits."""
        now = self._clock()
        if country:
            session = f"{session}@{country}"
        with self._lock:
            current = self._sessions.get(session)
            ttl = self.session_ttl
            if current is not None and (ttl is None or now - current[1] < ttl):
                return current[0]
            ip = exit_address(next(_EXIT_INDEX))
            self._sessions[session] = (ip, now)
            place_exit(ip, country)
        logger.debug("gateway session %r gets exit %s", session, ip)
        return ip

    async def _accepted(self, conn: Conn) -> None:
        with self._lock:
            self.connections_accepted += 1
        if self.connect_latency and self.mode == "normal":
            await self._sleep(self.connect_latency)

    def authenticate(self, header: str | None) -> tuple[str, str] | None:
        """(session id, country), "" for none, for a Proxy-Authorization
        value, or None if it is not accepted."""
        creds = decode_basic(header)
        if self.accept_any_credentials:
            return (creds[0], "") if creds is not None else ("", "")
        if creds is None:
            return None
        user, password = creds
        session = match_credentials(
            user, password, username=self.username, expected_password=self._password
        )
        return None if session is None else (session, credential_country(*creds))

    async def _request(
        self,
        conn: Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: tuple[str, Headers],
    ) -> bool:
        """Answer one request; True to keep the client connection open."""
        method, target, version = split_request_line(head[0])
        headers = head[1]
        body = await read_body(reader, headers)
        conn.requests += 1
        close = (
            method == "CONNECT"
            or wants_close(version, headers)
            or conn.requests == self.requests_per_connection
        )
        auth = self.authenticate(get_header(headers, "proxy-authorization"))
        session, country = auth or (None, "")
        if session is None:
            with self._lock:
                self.auth_failures += 1
            answer = _text(407, "proxy authentication required")
        else:
            answer = await self._answer(
                conn, method, target, headers=headers, body=body, session=session,
                country=country,
            )  # fmt: skip
        rec = ProxyRecord(
            self._clock(), conn.id, method, target, session or "",
            answer.exit_ip, answer.status, country,
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
        conn: Conn,
        method: str,
        target: str,
        *,
        headers: Headers,
        body: bytes,
        session: str,
        country: str = "",
    ) -> _Answer:
        try:
            host, port = parse_target(method, target)
        except BadRequest:
            return _text(400, "CONNECT host:port or an absolute http:// URL needed")
        address = loopback_target(host)
        if address is None:  # refused before any connection attempt
            return _text(403, "the sandbox only reaches loopback targets")
        if not self.pin_per_connection:
            exit_ip = self.exit_for(session, country)
        elif conn.pinned is None:
            exit_ip = conn.pinned = self.exit_for(session, country)
        else:
            exit_ip = conn.pinned
        if self.request_latency:
            await self._sleep(self.request_latency)
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
