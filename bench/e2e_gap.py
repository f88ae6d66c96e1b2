"""Where the end-to-end gap goes: crawler CPU per page of ablated crawls.

The plugin's crawl costs the crawler more CPU per page than a crawl through
a fixed proxy, and the crawl is bound by that CPU. This runs crawls that
take the pieces apart, interleaved (every round runs every variant once, in
turn, so a slow moment of the machine hits them alike), and prints each
variant's median CPU per page and its paired difference from the first
variant, in microseconds per page, with a 95 % bootstrap interval over the
rounds:

- ``baseline``: fixed proxy, Scrapy's handler, nothing of ours;
- ``sessions-stock``: one session per item written into
  ``meta["proxy"]`` by the spider, Scrapy's handler (connections shared
  between sessions): what per-session credentials cost by themselves;
- ``sessions-ours``: the same through our handler (one connection
  per session, turns): what keeping sessions on their own connections costs;
- ``sessions-ours-noturns``: the same with
  ``STICKY_PROXY_CONNECTIONS_PER_SESSION = 0`` (three times the connections);
- ``memory-stock``: the addon, connections shared: what our
  middlewares and extension cost;
- ``memory``: the addon as shipped;
- ``memory-nojars``: ``STICKY_PROXY_COOKIES_PER_SESSION = False``.

    python -m bench.e2e_gap [--items 500] [--rounds 6] [--only NAME,NAME]

CPU per page is steadier than pages/s on a shared machine (it does not
count the time the crawler waits for a core), so it resolves smaller
differences; it is the crawler's own CPU, the sandbox runs in another
process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Any

from .common import crawl_command, median, run_crawl, sandbox_process

STOCK = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"
OURS = "scrapy_sticky_proxy.StickyProxyDownloadHandler"


def _handlers(path: str) -> list[str]:
    return ["-s", "DOWNLOAD_HANDLERS=" + json.dumps({"http": path, "https": path})]


NO_TURNS = ["-s", "STICKY_PROXY_CONNECTIONS_PER_SESSION=0"]
# name -> (crawl_once variant, extra arguments); the first is the reference.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("baseline", []),
    "sessions-stock": ("sessions", []),
    "sessions-ours": ("sessions", _handlers(OURS)),
    "sessions-ours-noturns": ("sessions", _handlers(OURS) + NO_TURNS),
    "memory-stock": ("memory", _handlers(STOCK)),
    "memory": ("memory", []),
    "memory-nojars": (
        "memory",
        ["-s", "STICKY_PROXY_COOKIES_PER_SESSION=False"],
    ),
}


def bootstrap_median(values: list[float], draws: int = 4000) -> tuple[float, float]:
    """A 95 % interval of the median of *values* (resampled with replacement)."""
    rnd = random.Random(16)
    medians = sorted(median([rnd.choice(values) for _ in values]) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def run(
    items: int = 500,
    rounds: int = 6,
    names: list[str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    names = names or list(VARIANTS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    with sandbox_process(items=items) as sandbox:
        # One untimed crawl: the first one after the sandbox started is slow.
        run_crawl(crawl_command("baseline", sandbox, min(items, 100)))
        for number in range(rounds):
            for name in names:
                variant, extra = VARIANTS[name]
                result = run_crawl(crawl_command(variant, sandbox, items, *extra))
                cpu[name].append(1000 * result["cpu_ms_per_page"])
                rates[name].append(result["pages_per_s"])
            if progress:
                progress(
                    f"round {number + 1}/{rounds}: "
                    + ", ".join(f"{n} {cpu[n][-1]:.0f}" for n in names)
                    + f" us/page (load {os.getloadavg()[0]:.1f})"
                )
    reference = names[0]
    rows = {}
    for name in names:
        deltas = [a - b for a, b in zip(cpu[name], cpu[reference], strict=True)]
        ratios = [a / b for a, b in zip(rates[name], rates[reference], strict=True)]
        rows[name] = {
            "cpu_us_per_page": median(cpu[name]),
            "delta_us_per_page": median(deltas),
            "delta_interval": bootstrap_median(deltas),
            "pages_per_s_ratio": median(ratios),
            "ratio_interval": bootstrap_median(ratios),
        }
    return {"items": items, "rounds": rounds, "reference": reference, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--only", default="", help="variant names, comma-separated")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    for name in names or ():
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    result = run(args.items, args.rounds, names, progress=print)
    print(f"crawler CPU per page against {result['reference']!r}, paired:")
    for name, row in result["rows"].items():
        lo, hi = row["delta_interval"]
        rlo, rhi = row["ratio_interval"]
        print(
            f"{name:34} {row['cpu_us_per_page']:6.0f} us/page"
            f"  {row['delta_us_per_page']:+5.0f} [{lo:+.0f}, {hi:+.0f}]"
            f"  pages/s x{row['pages_per_s_ratio']:.3f} [{rlo:.3f}, {rhi:.3f}]"
        )


if __name__ == "__main__":
    main()
