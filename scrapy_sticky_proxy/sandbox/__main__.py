"""Run a sandbox: ``python -m scrapy_sticky_proxy.sandbox``.

Prints one JSON line with the gateway and site URLs, then serves until
SIGINT/SIGTERM, or, when stdin is a pipe (a program that started it),
until the pipe closes (``--ignore-stdin`` to serve on). A terminal or
/dev/null on stdin (``&`` in a shell or a script) is not read: a job in
the background that read its terminal would be stopped by the shell.

A line on stdin is a command, answered with one JSON line on stdout (the
benchmarks count connections this way): ``stats`` gives
``{"connections_accepted": ..., "requests": ...}`` (client connections the
gateway accepted and requests it answered since the start or the last
``reset``); ``reset`` clears them, the sessions, the logs and the ban rule,
and answers ``{"reset": true}``; another command gets ``{"error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
from types import FrameType

from . import Sandbox, ban_fraction

_NONNEGATIVE = "must be a number of seconds >= 0"
_COUNT = "must be a whole number >= 0"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_sticky_proxy.sandbox",
        description="Loopback proxy gateway and demo site for scrapy-sticky-proxy.",
    )
    parser.add_argument("--items", type=int, default=50, help="items on the index")
    parser.add_argument(
        "--ban-fraction",
        type=float,
        default=0.0,
        help="ban this fraction of exit addresses (403, 429 or captcha)",
    )
    parser.add_argument(
        "--pin-per-connection",
        action="store_true",
        help="pick the exit once per client connection, like some gateways",
    )
    parser.add_argument(
        "--session-ttl", type=float, default=None, help="session lifetime, seconds"
    )
    parser.add_argument(
        "--connect-latency",
        type=_seconds,
        default=0.0,
        help="seconds the gateway waits on each new client connection",
    )
    parser.add_argument(
        "--request-latency",
        type=_seconds,
        default=0.0,
        help="seconds the gateway waits before each request goes upstream",
    )
    parser.add_argument(
        "--requests-per-connection",
        type=_count,
        default=0,
        help="close a client connection after this many requests (0: never)",
    )
    parser.add_argument(
        "--ignore-stdin", action="store_true", help="do not stop when stdin closes"
    )
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_NONNEGATIVE) from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(_NONNEGATIVE)
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_COUNT) from None
    if value < 0:
        raise argparse.ArgumentTypeError(_COUNT)
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    rule = ban_fraction(args.ban_fraction) if args.ban_fraction > 0 else None
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sandbox = Sandbox(
        items=args.items,
        ban_rule=rule,
        pin_per_connection=args.pin_per_connection,
        session_ttl=args.session_ttl,
        gateway_latency=(args.connect_latency, args.request_latency),
        requests_per_connection=args.requests_per_connection,
    ).start()
    try:
        line = {
            "gateway_url": sandbox.gateway_url,
            "site_url": sandbox.site_url,
            "site_https_url": sandbox.site_https_url,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        if not args.ignore_stdin and _stdin_is_a_pipe():
            threading.Thread(
                target=_serve_stdin, args=(sandbox, done), daemon=True
            ).start()
        while not done.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


def _stdin_is_a_pipe() -> bool:
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _serve_stdin(sandbox: Sandbox, done: threading.Event) -> None:
    """Answer commands on stdin until it closes (then set *done*)."""
    pending = b""
    try:
        fd = sys.stdin.fileno()
        while chunk := os.read(fd, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                _command(sandbox, line.strip().decode("ascii", "replace"))
    except (AttributeError, OSError, ValueError):
        pass  # no usable stdin counts as closed
    sys.stderr.write("sandbox: stdin closed, stopping (--ignore-stdin serves on)\n")
    done.set()


def _command(sandbox: Sandbox, command: str) -> None:
    if command == "stats":
        gateway = sandbox.gateway
        answer: dict[str, object] = {
            "connections_accepted": gateway.connections_accepted,
            "requests": len(gateway.log),
        }
    elif command == "reset":
        sandbox.reset()
        answer = {"reset": True}
    elif command:
        answer = {"error": f"unknown command {command[:40]!r}: stats or reset"}
    else:
        return  # a blank line
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
