"""What ``scrapy sticky_proxy status`` reads from a namespace in Redis, and
how it prints it.

``status --json`` keys (besides ``redis_url``): ``namespace``, ``time``
(Unix s), ``burned_keys``, ``generations`` ({"1","2","3","4+"}: count),
``bumps``, ``proxies`` ([{"id","state","failures","retry_at","retry_in",
"ever_ok"}]; ``retry_in`` in s, negative once due, null unless benched),
``gave_up`` (count), ``crawlers`` ([{"spider","host","pid","start","uptime"}]).

Whatever the namespace holds was written by someone: a value that is not one
of ours (wrong type, NaN, 1e400, a 10 MB string) is left out or shown as
``-``, text from Redis is printed with control characters escaped and cut
to a bounded length, and a key of the wrong type reads as empty.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from .routing.health import PoolPolicy, ProxyState
from .routing.pool import ProxyPool
from .state.redis_layout import (
    MAX_VALUE_LEN,
    is_digest,
    parse_generation,
    parse_proxy_state,
    printable,
    scan_pattern,
)


def _scan(client: Any, prefix: str) -> list[tuple[str, str]]:
    """(name, value) of the string keys under *prefix* (SCAN, never KEYS);
    other types read as missing (MGET), and overlong values are left out."""
    found = client.scan_iter(match=scan_pattern(prefix), count=1000)
    names = list(dict.fromkeys(found))
    pairs = (
        zip(chunk, client.mget(chunk), strict=True)
        for chunk in (names[i : i + 1000] for i in range(0, len(names), 1000))
    )
    return [
        (name, value)
        for chunk in pairs
        for name, value in chunk
        if isinstance(value, str) and len(value) <= MAX_VALUE_LEN
    ]


def _read(call: Any, *args: Any, default: Any) -> Any:
    """A read of one key, *default* if the key has the wrong type."""
    from redis.exceptions import ResponseError

    try:
        return call(*args)
    except ResponseError:  # WRONGTYPE: someone else's key
        return default


def _is_count(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 18 and value.isdigit()


def _crawler(value: str, now: float) -> dict[str, Any] | None:
    """A heartbeat for display, or ``None`` if it is not one."""
    try:
        beat = json.loads(value, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None
    if not isinstance(beat, dict):
        return None
    pid, start = beat.get("pid"), beat.get("start")
    if isinstance(start, bool) or not isinstance(start, (int, float)):
        start = None
    elif not 0 <= start <= now + 86400:
        start = None  # NaN, inf, 1e400, a string, a bool: not a time
    return {
        "spider": printable(beat.get("spider", ""), 100),
        "host": printable(beat.get("host", ""), 100),
        "pid": pid if type(pid) is int and 0 <= pid < 2**32 else None,
        "start": None if start is None else float(start),
        "uptime": None if start is None else round(now - start, 1),
    }


def collect_status(client: Any, ns: str, policy: PoolPolicy, now: float) -> dict:
    """``status --json`` but ``redis_url``; *client* decodes replies (so Any)."""
    generations = dict.fromkeys(("1", "2", "3", "4+"), 0)
    prefix = f"{ns}:g:"
    for name, value in _scan(client, prefix):
        if (generation := parse_generation(value)) and is_digest(name[len(prefix) :]):
            generations["4+" if generation >= 4 else str(generation)] += 1
    raw = _read(client.hgetall, f"{ns}:proxies", default={})
    states = {
        k: parsed for k, v in raw.items() if (parsed := parse_proxy_state(v, now))
    }
    # A pool holding the shared states labels them exactly as crawlers do.
    pool = ProxyPool(list(states) or ["-"], policy=policy)
    proxies = []
    for proxy_id, (failures, stored_retry, ever_ok) in sorted(states.items()):
        pool.restore(proxy_id, failures, stored_retry, ever_ok)
        retry_at = pool.export(proxy_id)[1]
        state = pool.state(proxy_id, now)
        if failures >= policy.dead_after:  # as the crawler that wrote it saw it
            state = ProxyState.DEAD  # (a pool restores it as benched: pool.py)
        proxies.append(
            {
                # host:port, never credentials
                "id": printable(proxy_id.rpartition("@")[2], 100),
                "state": state.value,
                "failures": failures,
                "retry_at": retry_at,
                "retry_in": None if retry_at is None else round(retry_at - now, 1),
                "ever_ok": ever_ok,
            }
        )
    crawlers = [
        crawler
        for _, value in _scan(client, f"{ns}:crawlers:")
        if (crawler := _crawler(value, now)) is not None
    ]
    crawlers.sort(key=lambda c: (c["spider"], c["host"], str(c["pid"])))
    bumps = _read(client.get, f"{ns}:stats:bumps", default=None)
    return {
        "namespace": ns,
        "time": round(now, 3),
        "burned_keys": sum(generations.values()),
        "generations": generations,
        "bumps": int(bumps) if _is_count(bumps) else 0,
        "proxies": proxies,
        "gave_up": _read(client.llen, f"{ns}:gave_up", default=0),
        "crawlers": crawlers,
    }


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [headers, *(tuple(map(str, row)) for row in rows)] if rows else []
    widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
    lines = ["  " + "  ".join(map(str.ljust, row, widths)).rstrip() for row in cells]
    return "\n".join([f"{title}: {len(rows)}", *lines])


def _uptime(seconds: float | None) -> str:
    return "-" if seconds is None else str(timedelta(seconds=int(max(seconds, 0))))


def format_status(status: dict[str, Any]) -> str:
    """``status`` for people."""
    histogram = ", ".join(f"{g}: {n}" for g, n in status["generations"].items())
    proxies = [
        (p["id"], p["state"], p["failures"], "-" if r is None else f"{max(r, 0):.0f}s")
        for p in status["proxies"]
        for r in [p["retry_in"]]
    ]
    crawlers = [
        (c["spider"], c["host"], c["pid"] or "-", _uptime(c["uptime"]))
        for c in status["crawlers"]
    ]
    lines = [
        f"Redis {status['redis_url']}, namespace {status['namespace']!r}",
        f"Burned keys: {status['burned_keys']} (by generation {histogram})",
        f"Generation bumps: {status['bumps']}",
        f"Given up: {status['gave_up']}",
        _table("Static proxies", ("PROXY", "STATE", "FAILURES", "RETRY IN"), proxies),
        _table("Live crawlers", ("SPIDER", "HOST", "PID", "UPTIME"), crawlers),
    ]
    return "\n".join(lines)
