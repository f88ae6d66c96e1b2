"""Starting a server subprocess for a test: wait for its own "ready" line,
bounded, and when it does not come, fail with everything the server said."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A subprocess whose merged stdout/stderr is drained by a thread (so a
    chatty server never blocks on a full pipe) and kept for the test."""

    def __init__(self, name: str, args: list[str], **popen: Any):
        self.name = name
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)  # end of output: the process exited

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, needle: str, timeout: float = 60) -> ServerProcess:
        """Return once the server printed *needle*; otherwise stop it and
        raise with its whole output, so the real cause is on screen."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._new.get(timeout=max(remaining, 0))
            except queue.Empty:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not start within {timeout:.0f} s; its "
                    f"output:\n{self.output}"
                ) from None
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(
                    f"{self.name} exited with {code} before it was ready; its "
                    f"output:\n{self.output}"
                )
            if needle in line:
                return self

    def stop(self, timeout: float = 30) -> str:
        """Terminate (then kill) the process; return everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(30)
