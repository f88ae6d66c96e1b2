"""Scale-out: two crawler processes sharing one Redis versus one process.

The same items are crawled by one process (Redis backend) and by two (each
half of the items, same namespace, started together), repetitions
interleaved. The two processes' throughput is their pages over the span from
the first one's start to the last one's end.

Everything runs on this machine: the sandbox (gateway and site, one process,
one event loop), Redis and the crawlers share its cores. The CPU seconds
each of them used are measured (crawlers: their own clock; the sandbox:
/proc; Redis: INFO cpu), which gives the ceiling of the machine:
``cores / (CPU seconds per page, all processes together)``. When the
ceiling is below the target, the machine is the limit, not the crawlers.

    python -m bench.scale_out [--items 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import (
    crawl_command,
    median,
    parse_result,
    redis_server,
    run_crawl,
    sandbox_process,
    start_crawl,
)


def redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def crawl_together(commands: list[list[str]]) -> list[dict[str, Any]]:
    """Start the crawls, wait until every one is ready, then let them go."""
    procs = [start_crawl(command) for command in commands]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc, command in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=600)
        results.append(parse_result(proc.returncode, out, err, command))
    return results


def one_run(
    sandbox: Any, url: str, items: int, processes: int, namespace: str
) -> dict[str, Any]:
    share = items // processes
    commands = [
        crawl_command(
            "redis",
            sandbox,
            share,
            "--first",
            str(n * share),
            "--redis-url",
            url,
            "--namespace",
            namespace,
            "--wait-go",
        )
        for n in range(processes)
    ]
    sandbox_before, redis_before = sandbox.cpu_seconds(), redis_cpu(url)
    results = crawl_together(commands)
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_before
    redis_used = redis_cpu(url) - redis_before
    pages = sum(r["pages"] for r in results)
    seconds = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    crawler_cpu = sum(r["cpu_s"] for r in results)
    return {
        "processes": processes,
        "pages": pages,
        "seconds": seconds,
        "pages_per_s": pages / seconds,
        "cpu_ms_per_page": {
            "crawlers": 1000 * crawler_cpu / pages,
            "sandbox": 1000 * sandbox_cpu / pages,
            "redis": 1000 * redis_used / pages,
        },
        "cores_busy": (crawler_cpu + sandbox_cpu + redis_used) / seconds,
    }


def run(
    items: int = 1000,
    repeat: int = 3,
    redis_url: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with redis_server(redis_url) as url, sandbox_process(items=items) as sandbox:
        run_crawl(crawl_command("baseline", sandbox, min(items, 100)))  # warm-up
        for rep in range(repeat):
            for processes in (1, 2):
                result = one_run(
                    sandbox, url, items, processes, f"bench:scale:{rep}:{processes}"
                )
                runs[processes].append(result)
                if progress:
                    progress(
                        f"scale-out {rep + 1}/{repeat} {processes} process(es): "
                        f"{result['pages_per_s']:.0f} pages/s, "
                        f"{result['cores_busy']:.2f} cores busy"
                    )
    return summarize(runs)


def summarize(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    rows: dict[int, dict[str, Any]] = {}
    for processes, results in runs.items():
        cpu = {
            part: median([r["cpu_ms_per_page"][part] for r in results])
            for part in ("crawlers", "sandbox", "redis")
        }
        rows[processes] = {
            "pages_per_s": median([r["pages_per_s"] for r in results]),
            "runs": [r["pages_per_s"] for r in results],
            "cpu_ms_per_page": cpu,
            "cores_busy": median([r["cores_busy"] for r in results]),
        }
    single = rows[1]["pages_per_s"]
    # What this machine could do at best with every core busy, at the CPU
    # cost per page the two-process runs had.
    per_page = sum(rows[2]["cpu_ms_per_page"].values()) / 1000
    ceiling = cores / per_page
    return {
        "rows": rows,
        "ratio": rows[2]["pages_per_s"] / single,
        "cores": cores,
        "ceiling_pages_per_s": ceiling,
        "ceiling_ratio": ceiling / single,
        "pages": runs[1][0]["pages"] if runs[1] else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    result = run(args.items, args.repeat, args.redis_url, progress=print)
    for processes, row in result["rows"].items():
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_ms_per_page"].items())
        print(
            f"{processes} process(es): {row['pages_per_s']:.0f} pages/s, "
            f"CPU ms/page: {cpu}; {row['cores_busy']:.2f} cores busy"
        )
    print(
        f"ratio x{result['ratio']:.2f}; ceiling of {result['cores']} cores "
        f"{result['ceiling_pages_per_s']:.0f} pages/s = x{result['ceiling_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
