"""``scrapy sticky_proxy``: look at, and act on, the state crawlers share in Redis.

``status --json`` keys: ``redis_url`` (password hidden), ``namespace``,
``time`` (Unix s), ``burned_keys``, ``generations`` ({"1","2","3","4+"}: count),
``bumps``, ``proxies`` ([{"id","state","failures","retry_at","retry_in",
"ever_ok"}]; ``retry_in`` in s, negative once due, null unless benched),
``gave_up`` (count), ``crawlers`` ([{"spider","host","pid","start","uptime"}]).

``requeue`` moves give-up records, oldest first, to a scrapy-redis start-URL
key as ``{"url", "method", "meta": {"sticky_proxy_key"}}`` plus, for a POST,
its form fields: the only body scrapy-redis can rebuild. Records it cannot
replay faithfully stay. One Lua script per move: an interrupted run loses none.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from . import meta as M
from .config import _pool_policy, _redis_params, _redis_url
from .errors import ConfigError
from .pool import PoolPolicy, ProxyPool
from .readers import read_str
from .redis_layout import redact_url, scan_pattern

if TYPE_CHECKING:
    import argparse

# Push, then remove: a failed push (wrong key type) ends it, the record kept.
_MOVE = """
if redis.call('LINDEX', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[4] == 'set' then redis.call('SADD', KEYS[2], ARGV[3])
elseif ARGV[4] == 'zset' then redis.call('ZADD', KEYS[2], 0, ARGV[3])
else redis.call('RPUSH', KEYS[2], ARGV[3]) end
redis.call('LREM', KEYS[1], 1, ARGV[2])
return 1
"""


def start_url_message(record: Any) -> str:
    """The scrapy-redis message replaying a give-up *record*, or ValueError."""
    if not isinstance(record, dict) or not isinstance(record.get("url"), str):
        raise ValueError("not a give-up record")
    method = str(record.get("method") or "GET").upper()
    message: dict[str, Any] = {"url": record["url"], "method": method}
    if isinstance(record.get("key"), str) and record["key"]:
        message["meta"] = {M.KEY: record["key"]}
    if body := record.get("body"):
        # Other fields become formdata, a body for POST only: must round-trip.
        if method != "POST" or record.get("body_encoding") or not isinstance(body, str):
            raise ValueError(f"scrapy-redis cannot send this {method} body")
        fields = parse_qsl(body, keep_blank_values=True)
        form = dict(fields)
        exact = len(form) == len(fields) and urlencode(fields) == body
        if not exact or form.keys() & {"url", "method", "meta"}:  # popped by it
            raise ValueError("the body is not a form scrapy-redis can rebuild")
        message.update(form)
    return json.dumps(message)  # ASCII: whatever REDIS_ENCODING the spider uses


def _scan(client: Any, prefix: str) -> list[str]:
    """Values of the string keys under *prefix* (SCAN, never KEYS)."""
    names = list(client.scan_iter(match=scan_pattern(prefix), count=1000))
    chunks = (client.mget(names[i : i + 1000]) for i in range(0, len(names), 1000))
    return [value for chunk in chunks for value in chunk if value is not None]


def collect_status(client: Any, ns: str, policy: PoolPolicy, now: float) -> dict:
    """``status --json`` but ``redis_url``; *client* decodes replies (so Any)."""
    generations = dict.fromkeys(("1", "2", "3", "4+"), 0)
    for value in _scan(client, f"{ns}:g:"):
        with contextlib.suppress(ValueError):
            if (generation := int(value)) >= 1:
                generations["4+" if generation >= 4 else str(generation)] += 1
    states = {k: v for k, v in client.hgetall(f"{ns}:proxies").items() if k}
    # A pool holding the shared states labels them exactly as crawlers do.
    pool = ProxyPool(list(states) or ["-"], policy=policy)
    proxies = []
    for proxy_id, state in sorted(states.items()):
        try:
            failures, retry_at, ever_ok = json.loads(state)
            pool.restore(proxy_id, failures, retry_at, ever_ok)
        except (ValueError, TypeError):
            continue  # not ours: another project sharing the namespace?
        retry_at = pool.export(proxy_id)[1]
        proxies.append(
            {
                "id": proxy_id.rpartition("@")[2],  # host:port, never credentials
                "state": pool.state(proxy_id, now).value,
                "failures": failures,
                "retry_at": retry_at,
                "retry_in": None if retry_at is None else round(retry_at - now, 1),
                "ever_ok": bool(ever_ok),
            }
        )
    crawlers = []
    for value in _scan(client, f"{ns}:crawlers:"):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            beat = json.loads(value)
            crawler = {k: beat[k] for k in ("spider", "host", "pid")}
            crawler["start"] = start = float(beat["start"])
            crawlers.append({**crawler, "uptime": round(now - start, 1)})
    crawlers.sort(key=lambda c: (str(c["spider"]), str(c["host"]), str(c["pid"])))
    return {
        "namespace": ns,
        "time": round(now, 3),
        "burned_keys": sum(generations.values()),
        "generations": generations,
        "bumps": int(client.get(f"{ns}:stats:bumps") or 0),
        "proxies": proxies,
        "gave_up": client.llen(f"{ns}:gave_up"),
        "crawlers": crawlers,
    }


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [headers, *(tuple(map(str, row)) for row in rows)] if rows else []
    widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
    lines = ["  " + "  ".join(map(str.ljust, row, widths)).rstrip() for row in cells]
    return "\n".join([f"{title}: {len(rows)}", *lines])


def format_status(status: dict[str, Any]) -> str:
    """``status`` for people."""
    histogram = ", ".join(f"{g}: {n}" for g, n in status["generations"].items())
    proxies = [
        (p["id"], p["state"], p["failures"], "-" if r is None else f"{max(r, 0):.0f}s")
        for p in status["proxies"]
        for r in [p["retry_in"]]
    ]
    crawlers = [
        (c["spider"], c["host"], c["pid"], timedelta(seconds=int(c["uptime"])))
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


def _out(text: str, stream: Any = None) -> None:
    # The command's output, not logging (Scrapy's own commands print too).
    (stream or sys.stdout).write(text + "\n")


class StickyProxyCommand(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "status [--json] | requeue --start-urls-key KEY [--limit N] [--dry-run]"

    def short_desc(self) -> str:
        return "Show sticky-proxy state in Redis, or requeue give-ups"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        add = parser.add_argument
        add("--namespace", metavar="NS", help="default: STICKY_PROXY_NAMESPACE")
        add("--redis-url", metavar="URL", help="default: STICKY_PROXY_REDIS_URL")
        add("--json", action="store_true", help="status: print one JSON object")
        add("--start-urls-key", metavar="KEY", help="requeue: scrapy-redis key")
        add("--limit", type=int, metavar="N", help="requeue: at most N records")
        add("--dry-run", action="store_true", help="requeue: show, move nothing")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args not in (["status"], ["requeue"]):
            raise UsageError(f"expected status or requeue, got {' '.join(args)!r}")
        if args[0] == "requeue" and not opts.start_urls_key:
            raise UsageError("requeue needs --start-urls-key KEY")
        if opts.limit is not None and opts.limit < 1:
            raise UsageError("--limit must be at least 1")
        try:
            import redis
        except ImportError:
            raise UsageError(
                "this command needs the redis package: "
                "pip install 'scrapy-sticky-proxy[redis]'"
            ) from None

        settings = self.settings
        assert settings is not None
        if opts.redis_url:  # through the setting, so that it is checked alike
            settings.set("STICKY_PROXY_REDIS_URL", opts.redis_url, "cmdline")
        if opts.namespace:
            settings.set("STICKY_PROXY_NAMESPACE", opts.namespace, "cmdline")
        try:
            url = _redis_url(settings)
            namespace = read_str(settings, "STICKY_PROXY_NAMESPACE") or "sticky_proxy"
            policy, params = _pool_policy(settings), _redis_params(settings)
            if opts.start_urls_key == f"{namespace}:gave_up":
                raise UsageError("--start-urls-key cannot be the give-up list")
            with redis.Redis.from_url(url, decode_responses=True, **params) as client:
                client.ping()
                if args[0] == "requeue":
                    self._requeue(client, namespace, opts)
                    return
                status = collect_status(client, namespace, policy, time.time())
        except (ValueError, redis.RedisError) as exc:  # ConfigError is a ValueError
            text = str(exc)
            if not isinstance(exc, ConfigError):  # names host:port, but be sure
                secret = urlsplit(url).password
                text = text.replace(secret, "***") if secret else text
                text = f"Redis at {redact_url(url)}: {text}"
            _out(f"scrapy sticky_proxy: error: {text}", sys.stderr)
            self.exitcode = 1
            return
        status = {"redis_url": redact_url(url), **status}
        _out(json.dumps(status, indent=2) if opts.json else format_status(status))

    def _requeue(self, client: Any, namespace: str, opts: argparse.Namespace) -> None:
        assert self.settings is not None
        names = ("REDIS_START_URLS_AS_SET", "REDIS_START_URLS_AS_ZSET")
        as_set, as_zset = map(self.settings.getbool, names)
        mode = "set" if as_set else "zset" if as_zset else "list"  # as scrapy-redis
        source, target, limit = f"{namespace}:gave_up", opts.start_urls_key, opts.limit
        move = client.register_script(_MOVE)
        moved = kept = index = 0  # index: the first record not yet looked at
        while (limit is None or moved < limit) and (
            batch := client.lrange(source, index, index + 499)
        ):
            for raw in batch[: None if limit is None else limit - moved]:
                try:
                    message = start_url_message(json.loads(raw))
                except ValueError as exc:
                    _out(f"kept record #{index}: {exc}: {raw[:300]}", sys.stderr)
                    kept, index = kept + 1, index + 1
                    continue
                if opts.dry_run:
                    _out(f"would push to {target}: {message}")
                    moved, index = moved + 1, index + 1
                elif move(keys=[source, target], args=[index, raw, message, mode]):
                    moved += 1  # the next record is at index now
                else:
                    break  # the list changed under us: read it again
        _out(
            f"{'Would move' if opts.dry_run else 'Moved'} {moved} record(s) from "
            f"{source} to {target} ({mode}); {kept} kept (cannot be replayed)"
        )
