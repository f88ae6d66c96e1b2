"""Run a sandbox: ``python -m scrapy_sticky_proxy.sandbox``.

Prints one JSON line with the gateway and site URLs, then serves until
SIGINT/SIGTERM or until stdin closes (``--ignore-stdin`` to serve on when
stdin is /dev/null, as for a background job).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from types import FrameType

from . import Sandbox, ban_fraction


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
        "--ignore-stdin", action="store_true", help="do not stop when stdin closes"
    )
    return parser.parse_args(argv)


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
    ).start()
    try:
        line = {
            "gateway_url": sandbox.gateway_url,
            "site_url": sandbox.site_url,
            "site_https_url": sandbox.site_https_url,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        if not args.ignore_stdin:
            threading.Thread(target=_wait_stdin, args=(done,), daemon=True).start()
        while not done.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


def _wait_stdin(done: threading.Event) -> None:
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (AttributeError, OSError, ValueError):
        pass  # no usable stdin counts as closed
    done.set()


if __name__ == "__main__":
    sys.exit(main())
