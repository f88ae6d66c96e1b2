"""The sandbox gateway's latency model (a gateway far away), its keep-alive
request limit, and the CLI's stdin commands the benchmarks count
connections with.

No timed assertion: the waits go through an injected ``sleep`` that
advances the sandbox's own (fake) clock, or holds until the test lets go.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import threading
from types import SimpleNamespace
from typing import cast
from urllib.parse import urlsplit

import pytest

from scrapy_sticky_proxy.sandbox import Sandbox
from scrapy_sticky_proxy.sandbox.__main__ import _parse_args

from .test_sandbox import (
    PASSWORD,
    TIMEOUT,
    USER,
    _start_cli,
    basic,
    get,
    get_https,
    ip_via,
    proxy_conn,
)

CONNECT, REQUEST = 0.020, 0.005


def test_waits_once_per_new_connection_and_once_per_upstream_request() -> None:
    now = [1000.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with Sandbox(
        username=USER,
        password=PASSWORD,
        gateway_latency=(CONNECT, REQUEST),
        clock=lambda: now[0],
        sleep=sleep,
    ) as sb:
        conn = proxy_conn(sb)  # one keep-alive connection, three requests
        try:
            for i in range(3):
                status = get(sb, f"/item/{i}", f"{USER}-session-a", conn=conn)[0]
                assert status == 200
        finally:
            conn.close()
        # refused at the gateway: a connection, no upstream request
        assert get(sb, "/item/1", USER, "wrong")[0] == 407
        # https: one wait for the CONNECT, none for what goes through the tunnel
        assert get_https(sb, "/item/1", f"{USER}-session-b")[0] == 200
        assert waits == [CONNECT, REQUEST, REQUEST, REQUEST, CONNECT, CONNECT, REQUEST]
        assert sb.gateway.connections_accepted == 3 == sb.gateway.connections
        # Each answer was recorded after its waits, on the sandbox's clock.
        offsets = [round(r.time - 1000.0, 3) for r in sb.gateway.log]
        assert offsets == [0.025, 0.030, 0.035, 0.055, 0.080]
        sb.reset()
        assert sb.gateway.connections_accepted == 0


def test_a_connection_in_its_wait_holds_up_no_other() -> None:
    held, release = threading.Event(), threading.Event()

    async def sleep(seconds: float) -> None:
        if not held.is_set():  # the first connection's wait lasts until released
            held.set()
            await asyncio.to_thread(release.wait, TIMEOUT)

    with Sandbox(
        username=USER, password=PASSWORD, gateway_latency=(CONNECT, 0.0), sleep=sleep
    ) as sb:
        with socket.create_connection(("127.0.0.1", sb.gateway_port), TIMEOUT) as slow:
            auth = basic(f"{USER}-session-slow", PASSWORD)
            slow.sendall(
                f"GET {sb.site_url}/item/1 HTTP/1.1\r\nHost: x\r\n"
                f"Proxy-Authorization: {auth}\r\nConnection: close\r\n\r\n".encode()
            )
            assert held.wait(TIMEOUT)
            ip_via(sb, "fast")  # answered while the first connection still waits
            assert [r.session for r in sb.gateway.log] == ["fast"]
            release.set()
            answer = b""
            while chunk := slow.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert [r.session for r in sb.gateway.log] == ["fast", "slow"]


def test_a_connection_ends_after_its_request_limit() -> None:
    with Sandbox(username=USER, password=PASSWORD, requests_per_connection=3) as sb:
        conn = proxy_conn(sb)
        try:
            answers = [
                get(sb, f"/item/{i}", f"{USER}-session-a", conn=conn)[1]
                for i in range(3)
            ]
            assert [a.getheader("Connection") for a in answers] == [None, None, "close"]
            assert [a.will_close for a in answers] == [False, False, True]
            # http.client reconnects on its own: a new connection, a new count
            answers = [
                get(sb, f"/item/{i}", f"{USER}-session-a", conn=conn)[1]
                for i in range(4)
            ]
            assert [a.getheader("Connection") for a in answers] == [
                None, None, "close", None,
            ]  # fmt: skip
        finally:
            conn.close()
        assert sb.gateway.connections_accepted == 3
        ids = [r.client_conn_id for r in sb.gateway.log]
        assert ids[:3] == [ids[0]] * 3 and ids[3:6] == [ids[3]] * 3 != ids[:3]
        assert ids[6] not in ids[:6]
    with pytest.raises(ValueError, match="requests_per_connection"):
        Sandbox(requests_per_connection=-1)


def test_the_gateway_itself_closes_the_connection_at_the_limit() -> None:
    # A raw socket, so that no client closes on seeing "Connection: close":
    # the end of the stream must come from the gateway (a timeout fails).
    with Sandbox(username=USER, password=PASSWORD, requests_per_connection=1) as sb:
        with socket.create_connection(("127.0.0.1", sb.gateway_port), TIMEOUT) as raw:
            auth = basic(f"{USER}-session-raw", PASSWORD)
            raw.sendall(
                f"GET {sb.site_url}/item/1 HTTP/1.1\r\nHost: x\r\n"
                f"Proxy-Authorization: {auth}\r\n\r\n".encode()
            )
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"\r\nConnection: close\r\n" in answer


def _ask(proc: subprocess.Popen[str], command: str) -> dict[str, object]:
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None
    stdin.write(command + "\n")
    stdin.flush()
    ready, _, _ = select.select([stdout], [], [], TIMEOUT)
    assert ready, f"no answer to {command!r}"
    answer: dict[str, object] = json.loads(stdout.readline())
    return answer


def test_cli_latency_flags_and_stdin_commands() -> None:
    proc, urls = _start_cli(
        "--connect-latency", "0.001", "--request-latency", "0",
        "--requests-per-connection", "1",
    )  # fmt: skip
    with proc:
        try:
            proxy = urlsplit(urls["gateway_url"])
            user, password = proxy.username or "", proxy.password or ""
            where = SimpleNamespace(gateway_port=proxy.port, site_url=urls["site_url"])
            sb = cast(Sandbox, where)
            conn = proxy_conn(sb)
            try:
                for _ in range(2):  # one request per connection: two of them
                    status = get(sb, "/item/1", f"{user}-session-cli", password, conn)
                    assert status[0] == 200
            finally:
                conn.close()
            assert _ask(proc, "stats") == {"connections_accepted": 2, "requests": 2}
            assert _ask(proc, "reset") == {"reset": True}
            assert _ask(proc, "stats") == {"connections_accepted": 0, "requests": 0}
            assert "error" in _ask(proc, "bogus")
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(TIMEOUT) == 0


@pytest.mark.parametrize("value", ["-0.02", "nan", "soon"])
def test_cli_refuses_a_latency_that_is_not_seconds(value: str) -> None:
    with pytest.raises(SystemExit):
        _parse_args(["--request-latency", value])


@pytest.mark.parametrize("value", ["-1", "2.5", "many"])
def test_cli_refuses_a_request_limit_that_is_not_a_count(value: str) -> None:
    assert _parse_args(["--requests-per-connection", "4"]).requests_per_connection == 4
    with pytest.raises(SystemExit):
        _parse_args(["--requests-per-connection", value])
