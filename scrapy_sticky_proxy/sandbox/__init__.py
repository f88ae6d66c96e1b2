"""An offline stand-in for a residential proxy provider and a target site.

Everything listens on 127.0.0.1 and the gateway only reaches loopback targets.
Each proxy session leaves through its own source address in 127.0.0.0/8, so
the demo site sees one "IP" per session::

    with Sandbox() as sb:
        proxy = sb.gateway_url  # http://sandbox:...@127.0.0.1:PORT
        start = sb.site_url + "/"

The sandbox runs its own asyncio loop in a daemon thread; its attributes
(``gateway.log``, ``site.hits``, ``site.ban_rule`` ...) may be read and set
from any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

from ._credentials import match_credentials, split_credential
from .ban_rules import (
    BanRule,
    RememberBans,
    ban_all,
    ban_fraction,
    ban_ips,
    rate_limit,
    warmup_required,
)
from .gateway import Gateway, ProxyRecord
from .site import DemoSite, Hit

__all__ = [
    "BanRule",
    "DemoSite",
    "Gateway",
    "Hit",
    "ProxyRecord",
    "RememberBans",
    "Sandbox",
    "ban_all",
    "ban_fraction",
    "ban_ips",
    "embedded",
    "match_credentials",
    "rate_limit",
    "split_credential",
    "warmup_required",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_START_TIMEOUT = 30.0


class Sandbox:
    """Gateway + demo site (http and https) on free ports of 127.0.0.1;
    with ``gateway_tls`` the gateway speaks TLS (an ``https://`` proxy).

    ``gateway_latency=(connect, request)``, in seconds, puts the gateway far
    away: a wait per new client connection and one per request sent
    upstream, awaited with ``sleep`` (asyncio.sleep; a test can inject its
    own, with ``clock``). ``requests_per_connection=N`` closes a client
    connection after its Nth answer ("Connection: close"), as servers with
    a keep-alive request limit do (0: no limit)."""

    def __init__(
        self,
        *,
        username: str = "sandbox",
        password: str = "sandbox-secret-pw",  # noqa: S107 (fake, loopback only)
        pin_per_connection: bool = False,
        session_ttl: float | None = None,
        accept_any_credentials: bool = False,
        items: int = 50,
        ban_rule: BanRule | None = None,
        clock: Callable[[], float] = time.monotonic,
        gateway_host: str = "127.0.0.1",
        gateway_tls: bool = False,
        gateway_latency: tuple[float, float] = (0.0, 0.0),
        requests_per_connection: int = 0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not gateway_host.startswith("127."):
            raise ValueError("the sandbox listens on loopback (127.0.0.0/8) only")
        self.gateway_host = gateway_host
        self.username = username
        self._password = password
        self.gateway = Gateway(
            username,
            password,
            pin_per_connection=pin_per_connection,
            session_ttl=session_ttl,
            accept_any_credentials=accept_any_credentials,
            clock=clock,
            tls=gateway_tls,
            connect_latency=gateway_latency[0],
            request_latency=gateway_latency[1],
            requests_per_connection=requests_per_connection,
            sleep=sleep,
        )
        self.site = DemoSite(items=items, ban_rule=ban_rule, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Sandbox gateway={self.gateway_hostport} site={self.site_url}>"

    # ---- lifecycle --------------------------------------------------------

    def start(self) -> Sandbox:
        """Start the loop thread; return once every server is listening."""
        with self._state_lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError("a Sandbox can be started only once")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="sticky-proxy-sandbox", daemon=True
            )
            self._loop, self._thread = loop, thread
            thread.start()
        try:
            self._call(self._start_servers(), timeout=_START_TIMEOUT)
        except Exception as exc:
            self.stop()
            # The servers' own error (an address in use, a missing
            # certificate library) is the cause: put it on screen.
            raise RuntimeError(
                f"the sandbox did not start: {type(exc).__name__}: "
                f"{exc or f'not listening after {_START_TIMEOUT:.0f} s'}"
            ) from exc
        except BaseException:
            self.stop()
            raise
        logger.debug("sandbox started: %r", self)
        return self

    async def _start_servers(self) -> None:
        await self.gateway.start(self.gateway_host)
        await self.site.start("127.0.0.1")

    async def _stop_servers(self) -> None:
        await self.gateway.close()
        await self.site.close()

    def stop(self) -> None:
        """Close servers and connections and join the thread; idempotent."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            try:
                self._call(self._stop_servers(), timeout=10)
            except Exception:
                logger.debug("sandbox shutdown failed", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        if not thread.is_alive():
            loop.close()
        logger.debug("sandbox stopped")

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10) -> _T:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the sandbox is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    # ---- controls (any thread) --------------------------------------------

    def gateway_refuse(self) -> None:
        """Close the gateway's listening socket and drop its connections."""
        self._call(self.gateway.set_mode("refuse"))

    def gateway_hang(self) -> None:
        """New connections and requests are accepted and never answered."""
        self._call(self.gateway.set_mode("hang"))

    def gateway_reset(self) -> None:
        """New connections are accepted (and counted) and reset at once."""
        self._call(self.gateway.set_mode("reset"))

    def gateway_drop(self) -> None:
        """Each request is read, then its connection reset unanswered."""
        self._call(self.gateway.set_mode("drop"))

    def gateway_echo(self) -> None:
        """Each request's head is sent back instead of an answer (a broken
        proxy: no status line), then the connection closed."""
        self._call(self.gateway.set_mode("echo"))

    def gateway_normal(self) -> None:
        """Serve again (re-listening on the same port after refuse)."""
        self._call(self.gateway.set_mode("normal"))

    def reset(self) -> None:
        """Clear logs, hits, sessions and the ban rule; back to normal mode."""

        async def _reset() -> None:
            await self.gateway.set_mode("normal")
            self.gateway.reset()
            self.site.reset()

        if self._loop is not None and not self._stopped:
            self._call(_reset())
        else:
            self.gateway.reset()
            self.site.reset()

    # ---- addresses ----------------------------------------------------------

    @property
    def gateway_port(self) -> int:
        return self.gateway.port

    @property
    def gateway_hostport(self) -> str:
        return f"{self.gateway_host}:{self.gateway.port}"

    @property
    def password(self) -> str:
        """The gateway's (fake) password, for tests that look for leaks."""
        return self._password

    @property
    def gateway_url(self) -> str:
        """Proxy URL with the base credentials and no session part
        (``https://`` when the gateway speaks TLS)."""
        user, password = quote(self.username, safe=""), quote(self._password, safe="")
        scheme = "https" if self.gateway.tls else "http"
        return f"{scheme}://{user}:{password}@{self.gateway_hostport}"

    @property
    def site_port(self) -> int:
        return self.site.port

    @property
    def site_https_port(self) -> int:
        return self.site.https_port

    @property
    def site_url(self) -> str:
        return f"http://127.0.0.1:{self.site.port}"

    @property
    def site_https_url(self) -> str:
        return f"https://127.0.0.1:{self.site.https_port}"


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


# ---- process-wide instance ------------------------------------------------------

_embedded: Sandbox | None = None
_embedded_lock = threading.Lock()


def embedded() -> Sandbox:
    """The process-wide sandbox, started on first use and stopped at exit."""
    global _embedded  # noqa: PLW0603
    with _embedded_lock:
        if _embedded is None:
            sandbox = Sandbox().start()
            atexit.register(sandbox.stop)
            _embedded = sandbox
        return _embedded
