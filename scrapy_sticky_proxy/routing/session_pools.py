"""Session pools: the requests of a site spread over N sessions, not one
session per URL (a 100,000-page crawl of one site is not 100,000 people).

A pool has a name (a host, a registrable domain, or a name the request
gives) and N *member keys*, ``pool:<name>#<i>`` for i in 0..N-1. A member
key is a session key like any other: its generation, bans and session id
are the store's, so a banned member is replaced by its next generation and
the pool keeps N live sessions, and every process that shares a namespace
uses the same N sessions (the keys, hence the ids, are the same).

:class:`SessionPools` hands out the members of each pool in turn (round
robin per process: exact, deterministic, no I/O), and keeps at most
``max_pools`` pools, least recently used out first (a crawl over a million
hosts does not grow it without bound; a pool that comes back starts its turn
at member 0 again, with the same sessions). A pool of up to
:data:`CACHED_KEYS` members keeps its keys (the turn is a ``next`` on a
cycle); a bigger one makes each key when its turn comes, so that 4096 pools
of 10,000 do not hold 41 million strings.

Pure logic: no Scrapy, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import cycle
from types import MappingProxyType

from .answers import target_of

SPANS = ("host", "domain")  # what a pool spans when the request names none
PREFIX = "pool:"  # every member key starts with it
DEFAULT_SIZE = 8
MAX_SIZE = 10_000
MAX_POOLS = 4096
CACHED_KEYS = 64


@dataclass(frozen=True)
class SessionPoolPolicy:
    """STICKY_PROXY_SESSION_POOL* and STICKY_PROXY_SESSION_SLOT*, parsed."""

    span: str | None = None  # one of SPANS, or None: only meta names a pool
    size: int = DEFAULT_SIZE
    sizes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    slots: bool = False  # each member its own download slot
    slot_concurrency: int = 1
    slot_delay: float = 0.001  # seconds between a slot's requests
    # Pool settings given while span is None: they apply only to requests
    # that name their pool in meta (the middleware says so once).
    idle: tuple[str, ...] = ()

    def size_of(self, name: str) -> int:
        return self.sizes.get(name, self.size)


def member_key(name: str, index: int) -> str:
    return f"{PREFIX}{name}#{index}"


def host_of(url: str) -> str | None:
    """The host of *url* as urlsplit's ``hostname`` gives it (lower case,
    no user, port or IPv6 brackets), without a trailing dot; None for a URL
    without one. Without urlsplit: asked for on every pooled request, and
    the parse cost half of it (python -m bench --only per-request)."""
    host = target_of(url).rpartition("@")[2]
    ipv6 = host.startswith("[")
    host = host[1:].partition("]")[0] if ipv6 else host.partition(":")[0]
    return host.lower().rstrip(".") or None


class _Turns:
    """The member keys of a big pool, in turn, each made when asked for."""

    __slots__ = ("_next", "_prefix", "_size")

    def __init__(self, name: str, size: int):
        self._prefix = f"{PREFIX}{name}#"
        self._size = size
        self._next = 0

    def __iter__(self) -> _Turns:
        return self

    def __next__(self) -> str:
        index = self._next
        self._next = (index + 1) % self._size
        return f"{self._prefix}{index}"


class SessionPools:
    """The pools of one process: which member the next request of a pool
    gets."""

    def __init__(self, policy: SessionPoolPolicy, max_pools: int = MAX_POOLS):
        self.policy = policy
        self.max_pools = max_pools
        self._turns: OrderedDict[str, Iterator[str]] = OrderedDict()
        self.made = 0  # pools made, evicted ones made again included
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._turns)

    def member(self, name: str) -> str:
        """The member key of pool *name* whose turn it is."""
        turns = self._turns
        turn = turns.get(name)
        if turn is None:
            if len(turns) >= self.max_pools:
                turns.popitem(last=False)
                self.evicted += 1
            size = self.policy.size_of(name)
            turn = turns[name] = (
                cycle([member_key(name, i) for i in range(size)])
                if size <= CACHED_KEYS
                else _Turns(name, size)
            )
            self.made += 1
        else:
            turns.move_to_end(name)
        return next(turn)
