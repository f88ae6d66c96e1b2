"""Instructions per page: the end-to-end crawls counted, not timed.

Pages/s on a shared 2-core VM spread by 20-35 % from one crawl to the next,
and even paired, interleaved crawls need 8 to 20 rounds to read a ratio to
3 % (``bench.e2e``). This runs the same crawls (``bench.crawl_once``, one
process each, against the sandbox run as a process of its own) under
``valgrind --tool=callgrind`` and reads the instructions the crawler's
process executed: a count, which the same crawl repeats to 0.03-0.2 %
whatever else the machine is doing (the ``baseline again`` row says how
closely in this run). Each variant is crawled twice, at ``small`` and
``big`` items; its figure is the difference divided by the difference in
pages, so Python's and Scrapy's start-up cancel out.

What a count leaves out: the kernel's work (system calls, the TCP stack;
valgrind counts user space only) and the cost of each instruction (cache
misses, the collector's walks over a larger heap cost more per instruction
than the rest). Under valgrind the crawler runs about 50 times slower than
the sandbox, so a crawl's timing (how many responses each turn of the event
loop finds) differs from a real one. It measures the work our code adds;
``bench.e2e`` measures what a user sees.

Variants, as in ``bench.e2e``: ``baseline`` (a fixed proxy, nothing of
ours), ``connection floor`` (the baseline through a gateway that ends every
client connection after 4 requests: the 0.25 new connections per page that
one session per item needs), ``sessions by hand`` (one session per item in
``meta["proxy"]``, our download handler, no middleware), ``memory`` and
``redis`` (the addon).

    python -m bench.instructions [--small 25] [--big 125] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import (
    ROOT,
    env,
    parse_result,
    redis_server,
    sandbox_process,
)
from .e2e import BY_HAND, FLOOR, PAGES_PER_CONNECTION, variant_command
from .e2e_summary import BASELINE

AGAIN = "baseline again"
ROWS = (BASELINE, AGAIN, FLOOR, BY_HAND, "memory", "redis")
_COLLECTED = re.compile(r"Collected : (\d+)")


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(command: list[str]) -> tuple[int, int]:
    """Run one crawl under callgrind: (instructions, pages). Only the total
    on stderr is read: the profile goes to /dev/null."""
    args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=3600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    result = parse_result(done.returncode, done.stdout, done.stderr, command)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(
            f"no instruction count from valgrind:\n{done.stderr[-2000:]}"
        )
    return int(found.group(1)), int(result["pages"])


def run(
    small: int = 25,
    big: int = 125,
    jobs: int = 2,
    redis_url: str | None = None,
    rows: tuple[str, ...] = ROWS,
    progress: Any = None,
) -> dict[str, Any]:
    if not available():
        raise RuntimeError(
            "valgrind is not installed (Debian: apt-get install valgrind)"
        )
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(redis_url))
        plain = stack.enter_context(sandbox_process(items=big))
        floor = stack.enter_context(
            sandbox_process(items=big, requests_per_connection=PAGES_PER_CONNECTION)
        )

        def command(name: str, items: int) -> list[str]:
            sandbox = floor if name == FLOOR else plain
            row = BASELINE if name == AGAIN else name
            return variant_command(row, sandbox, items, url, f"bench:ir:{items}")

        tasks = [(name, items) for name in rows for items in (small, big)]

        def one(task: tuple[str, int]) -> tuple[int, int]:
            return count(command(*task))

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            counted = dict(zip(tasks, pool.map(one, tasks), strict=True))
    per_page = {}
    for name in rows:
        (ir_small, pages_small), (ir_big, pages_big) = (
            counted[name, small],
            counted[name, big],
        )
        per_page[name] = (ir_big - ir_small) / (pages_big - pages_small)
        if progress:
            progress(f"instructions {name}: {per_page[name] / 1e3:,.0f} k/page")
    return {
        "small": small,
        "big": big,
        "per_page": per_page,
        "seconds": time.monotonic() - started,
    }


def report(r: Any, result: dict[str, Any]) -> None:
    per_page = result["per_page"]
    base = per_page[BASELINE]
    floor = per_page.get(FLOOR)
    r.out(
        f"### 6. Instructions per page (callgrind): crawls of {result['small']} and "
        f"{result['big']} items, the difference per page"
    )
    r.out()
    rows = [
        [
            name,
            f"{value / 1e3:,.0f}",
            f"{value / base:.4f}",
            f"{value / floor:.4f}" if floor else "-",
        ]
        for name, value in per_page.items()
    ]
    r.table(["variant", "k instructions/page", "ratio to baseline", "to floor"], rows)
    r.out(
        f"{result['seconds'] / 60:.1f} min. A count, not a time: the kernel's "
        "work and the cost of each instruction are not in it (`bench/instructions.py`)."
    )
    r.out()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=25)
    parser.add_argument("--big", type=int, default=125)
    parser.add_argument("--jobs", type=int, default=2, help="crawls counted at once")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    from .common import Report

    result = run(args.small, args.big, args.jobs, args.redis_url, progress=print)
    report(Report(), result)


if __name__ == "__main__":
    main()
