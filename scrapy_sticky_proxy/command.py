"""``scrapy sticky_proxy``: look at, and act on, the state crawlers share in Redis.

``status`` prints what :mod:`scrapy_sticky_proxy._status` reads (``--json``:
its keys, plus ``redis_url`` with the password hidden).

``requeue`` moves give-up records, oldest first, to a scrapy-redis start-URL
key as ``{"url", "method", "meta": {"sticky_proxy_key", "sticky_proxy_country"}}``
(the country when the request asked for one) plus, for a POST,
its form fields: the only body scrapy-redis can rebuild. Records it cannot
replay faithfully stay. One Lua script per move: an interrupted run loses none.

Whatever the namespace holds was written by someone: a record that is not
one of ours is kept and shown escaped and cut to a bounded length.

Its settings (the Redis URL and parameters, the namespace, the static
proxies' health policy) are parsed by
:class:`~scrapy_sticky_proxy.config.SharedStateConfig`, and nothing else:
the command has no crawler and routes nothing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from . import _meta as M
from ._status import collect_status, format_status
from .config import SharedStateConfig
from .errors import ConfigError
from .routing.location import LocationError, country_code
from .state.redis_layout import DECODE, printable, redact_url

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
    meta: dict[str, str] = {}
    if isinstance(record.get("key"), str) and record["key"]:
        meta[M.KEY] = record["key"]
    if country := record.get("country"):  # from anywhere else, it is no replay
        try:
            meta[M.COUNTRY] = country_code(country)
        except LocationError:
            raise ValueError("its country is no ISO 3166-1 code") from None
    if meta:
        message["meta"] = meta
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
    try:  # bytes that were no UTF-8 in Redis: no request can carry them
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("it holds bytes that are not UTF-8") from None
    return json.dumps(message)  # ASCII: whatever REDIS_ENCODING the spider uses


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
            shared = SharedStateConfig.from_settings(settings)
            url, namespace = shared.redis_url, shared.namespace
            if opts.start_urls_key == f"{namespace}:gave_up":
                raise UsageError("--start-urls-key cannot be the give-up list")
            with redis.Redis.from_url(
                url, **{**shared.redis_params, **DECODE}
            ) as client:
                client.ping()
                if args[0] == "requeue":
                    self._requeue(client, namespace, opts)
                    return
                status = collect_status(
                    client, namespace, shared.pool_policy, time.time()
                )
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
        text = json.dumps(status, indent=2, allow_nan=False)
        _out(text if opts.json else format_status(status))

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
                except (ValueError, RecursionError) as exc:  # nested too deep
                    why = printable(str(exc), 100)
                    _out(
                        f"kept record #{index}: {why}: {printable(raw, 300)}",
                        sys.stderr,
                    )
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
