"""The memory store's state on disk, for a crawl paused and resumed with
Scrapy's ``JOBDIR``: the file format, its checks, and the atomic write.

One JSON object (never pickle), written whole at the end of a run and read
at the start of the next, as Scrapy does with ``spider.state``::

    {"format": "scrapy-sticky-proxy/state", "version": 1,
     "scope": "<digest>", "saved": <Unix seconds>,
     "keys": {"<key digest>": {"generation": 2, ...}, ...},
     "tiers": {"<site>": [<tier>, <Unix time of the move>], ...}}

Keys are known by the digest Redis knows them by (``key_digest``), never
by the key itself: a key holds whatever the key policy put there (a URL,
its query, a password if the policy put one), and 10 kB keys would make the
file unbounded. ``keys`` lists the least recently used first, and so does
``tiers`` (STICKY_PROXY_TIERS: the sites above tier 1, at most
:data:`MAX_SITES`; absent without them). ``scope`` is a
digest of what makes a generation mean something (the namespace, the
provider, the routes): a file written for another one is set aside.

Everything read back is untrusted: a file that is not ours, of another
version or scope, too large, or not JSON is set aside whole; an entry that
fails its checks is skipped. Nothing here raises on a bad file.

No Scrapy: the caller says where the file is and logs what it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._numbers import finite
from .redis_layout import MAX_GENERATION
from .redis_tiers import checked, is_site
from .store import MAX_SCORE

FILENAME = "sticky_proxy.state"
FORMAT = "scrapy-sticky-proxy/state"
VERSION = 1
MAX_USES = 2**31 - 1
MAX_AGE = 10 * 365 * 86400.0
# Bytes a key may take in the file, on top of a fixed allowance: a larger
# file was not written for this STICKY_PROXY_MAX_KEYS (or not by us).
BYTES_PER_KEY = 256
BYTES_FIXED = 65536
MAX_SITES = 1000  # sites above tier 1 kept, the most recently used
BYTES_PER_SITE = 300  # a host name (at most 255) and its [tier, time]
_DIGEST = re.compile(r"[0-9a-f]{24}")


def _count(maximum: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and 0 <= v <= maximum


def _number(value: Any) -> bool:
    return finite(value)


def _seconds(value: Any) -> bool:
    return _number(value) and 0 <= value <= MAX_AGE


#: What a key's state may hold, one line per field: its name in the file and
#: the check of its value. Unknown names are ignored (a newer writer's).
FIELDS: dict[str, Callable[[Any], bool]] = {
    "generation": _count(MAX_GENERATION),
    "uses": _count(MAX_USES),  # with rotation: uses of the current session
    "age": _seconds,  # with a maximum age: how old the current session is
    "score": _count(MAX_SCORE),  # the error score of the current session
}


def scope_of(*parts: str) -> str:
    """The digest of what a snapshot is valid for."""
    text = json.dumps(parts, ensure_ascii=True)
    return hashlib.blake2b(text.encode("ascii"), digest_size=12).hexdigest()


@dataclass
class Loaded:
    """What :func:`load` read: the entries it kept (least recently used
    first), how long ago the file was written, and what it set aside."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    tiers: list[tuple[str, int, float]] = field(default_factory=list)
    paused: float = 0.0  # seconds between the write and the read, >= 0
    skipped: int = 0  # entries that failed their checks
    problem: str | None = None  # why the whole file was set aside


def load(path: str, scope: str, max_keys: int, now: float) -> Loaded | None:
    """The snapshot at *path*, checked; ``None`` when there is none."""
    try:
        with open(path, "rb") as file:
            limit = BYTES_FIXED + BYTES_PER_KEY * max_keys + BYTES_PER_SITE * MAX_SITES
            data = file.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Loaded(problem=f"cannot be read ({exc.strerror or type(exc).__name__})")
    if len(data) > limit:
        return Loaded(problem=f"is larger than {max_keys} keys can take")
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Loaded(problem="is not valid JSON")
    return _read(document, scope, max_keys, now)


def _read(document: Any, scope: str, max_keys: int, now: float) -> Loaded:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return Loaded(problem="is not a scrapy-sticky-proxy state file")
    if document.get("version") != VERSION:
        return Loaded(problem="was written by another version of the format")
    if document.get("scope") != scope:
        return Loaded(
            problem="was written for another namespace, provider or proxy "
            "(STICKY_PROXY_NAMESPACE, STICKY_PROXY_PROVIDER, STICKY_PROXY_URL "
            "or STICKY_PROXY_LIST changed)"
        )
    saved, keys = document.get("saved"), document.get("keys")
    if not isinstance(saved, (int, float)) or not _number(saved):
        return Loaded(problem="is malformed")
    if not isinstance(keys, dict):
        return Loaded(problem="is malformed")
    # A clock set back (or a file from the future) counts as no pause.
    loaded = Loaded(paused=max(0.0, now - saved))
    # The file lists the least recently used first: keep the newest.
    entries = list(keys.items())[-max_keys:]
    loaded.skipped = len(keys) - len(entries)
    for digest, state in entries:
        if _valid(digest, state):
            loaded.keys[digest] = state
        else:
            loaded.skipped += 1
    tiers = document.get("tiers", {})
    if not isinstance(tiers, dict):
        tiers = {None: None}  # one entry that fails its checks
    sites = list(tiers.items())[-MAX_SITES:]
    loaded.skipped += len(tiers) - len(sites)
    for site, value in sites:
        move = checked(value, now) if is_site(site) else None
        if move is None:
            loaded.skipped += 1
        else:
            loaded.tiers.append((site, *move))
    return loaded


def _valid(digest: Any, state: Any) -> bool:
    return (
        isinstance(digest, str)
        and _DIGEST.fullmatch(digest) is not None
        and isinstance(state, dict)
        and all(check(state[name]) for name, check in FIELDS.items() if name in state)
    )


def save(
    path: str,
    keys: Iterable[tuple[str, dict[str, Any]]],
    scope: str,
    now: float,
    tiers: Sequence[tuple[str, int, float]] = (),
) -> int:
    """Write the snapshot atomically: to a temporary file in the same
    directory, flushed to disk, then renamed over *path*, so that a crash
    at any point leaves the previous snapshot whole. Returns how many keys
    were written; raises OSError (the previous snapshot is kept). *tiers*:
    ``(site, tier, since)``, the least recently used first."""
    entries = dict(keys)
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "scope": scope,
        "saved": now,
        "keys": entries,
    }
    kept = [(site, tier, since) for site, tier, since in tiers if is_site(site)]
    if kept:
        document["tiers"] = {s: [tier, since] for s, tier, since in kept[-MAX_SITES:]}
    data = json.dumps(document, separators=(",", ":")).encode("ascii")
    temporary = f"{path}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(os.path.dirname(os.path.abspath(path)))
    return len(entries)


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; best effort elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
