"""The sandbox gateway's listening side: the loopback server, its client
connections, and the fault modes a test switches it to.

:class:`Listener` accepts connections and hands each request to
:meth:`Listener._request` (the gateway's), unless a fault mode says
otherwise: "refuse", "hang", "reset", "drop" or "echo" (see :meth:`Listener.set_mode`).
With ``tls`` it speaks TLS (a self-signed certificate made at start), as an
``https://`` proxy does.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from dataclasses import dataclass

from ._http import (
    BACKLOG,
    ConnectionTracker,
    Headers,
    check_loopback_bind,
    close_server,
    read_head,
)

MODES = ("normal", "refuse", "hang", "reset", "drop", "echo")
_LINGER_0 = struct.pack("ii", 1, 0)


@dataclass
class Conn:
    """One client connection."""

    id: int
    pinned: str | None = None  # the exit, with pin_per_connection
    requests: int = 0  # requests read on it so far


class Listener:
    """A loopback server with fault modes; subclasses answer requests."""

    def __init__(self, name: str, *, tls: bool = False) -> None:
        self.tls = tls
        self.cert_pem = b""
        self._ssl: ssl.SSLContext | None = None
        self.mode = "normal"
        self.connections = 0
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._next_conn = 0
        self._server: asyncio.AbstractServer | None = None
        self._closed = False
        self._conns = ConnectionTracker(name)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host`` (127.0.0.0/8 only); call on the event loop."""
        check_loopback_bind(host)
        self.host = host
        if self.tls and self._ssl is None:
            from .site import make_tls_context

            self._ssl, self.cert_pem = make_tls_context()
        self._server = await asyncio.start_server(
            self._conns.wrap(self._serve), host, port, backlog=BACKLOG, ssl=self._ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_mode(self, mode: str) -> None:
        """Switch to "normal", "refuse" (listening socket closed), "hang",
        "reset" (every connection is accepted, counted and reset at once) or
        "drop" (each request is read, then its connection reset unanswered)
        or "echo" (each request's head is sent back as the answer, a broken
        proxy whose reply has no status line, then the connection closed)."""
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

    @property
    def peak_connections(self) -> int:
        """The most client connections that were open at once."""
        return self._conns.peak

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "refuse":  # mode set directly, without set_mode()
            writer.transport.abort()
            return
        with self._lock:
            self.connections += 1
            self._next_conn += 1
            conn = Conn(self._next_conn)
        await self._accepted(conn)
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
            if self.mode == "echo":
                line, headers = head
                echoed = [line, *(f"{name}: {value}" for name, value in headers)]
                writer.write(("\r\n".join(echoed) + "\r\n\r\n").encode("latin-1"))
                await writer.drain()
                writer.close()
                return
            if self.mode != "hang" and not await self._request(
                conn, reader, writer, head
            ):
                return

    async def _accepted(self, conn: Conn) -> None:
        """A client connection was accepted (and counted); before its first
        request is read."""

    async def _request(
        self,
        conn: Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: tuple[str, Headers],
    ) -> bool:
        """Answer one request; True to keep the client connection open."""
        raise NotImplementedError


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, not a FIN (linger 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    writer.transport.abort()
