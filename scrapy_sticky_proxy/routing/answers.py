"""When each target last answered: tells a tarpitted exit from a slow site."""

from __future__ import annotations

import re
from typing import Any

_NETLOC = re.compile(r"[^/?#]*")


def target_of(url: str) -> str:
    """The part of *url* between ``//`` and the path, query or fragment
    (urlparse's netloc), found with three ``str.find``: it is asked for on
    every response, and parsing the URL cost more than the rest of the
    answer's bookkeeping (python -m bench --only per-request)."""
    match = _NETLOC.match(url.partition("//")[2])
    assert match is not None  # it matches the empty string
    return match.group()


class AnswerLog:
    """When each target (host:port) last answered, through any session.

    A timeout is the exit's fault only if the target answered another
    request while this one waited: a tarpitted exit then, not a slow site.
    Bounded: the least recently answering targets are forgotten first (a
    forgotten target's timeouts count as "slow", which burns nothing).
    """

    def __init__(self, max_hosts: int = 4096):
        self.max_hosts = max_hosts
        self._last: dict[str, float] = {}
        self._newest: str | None = None  # the last one in _last's order

    def answered(self, host: str, now: float) -> None:
        last = self._last
        if host == self._newest:  # most answers: the target of the last one
            last[host] = now
            return
        last.pop(host, None)
        last[host] = now
        self._newest = host
        if len(last) > self.max_hosts:
            del last[next(iter(last))]
            if host not in last:  # max_hosts 0
                self._newest = None

    def answered_since(self, host: str, since: float) -> bool:
        when = self._last.get(host)
        return when is not None and when >= since


class RouteFaults:
    """Download errors that are no timeout (a reset, a garbled or missing
    answer) through each route, by session, since the route last answered.
    A gateway that resets or garbles every request fails each session
    that tries it: from *sessions* sessions in a row with no answer
    between, the route may be failing, and its errors are waited out on
    their own sessions (:meth:`.._verdicts.Verdicts._route_wait`), not
    bans that burn every exit in a second or two."""

    def __init__(self, sessions: int = 3):
        self.sessions = sessions
        self._failing: dict[str, tuple[float, set[str]]] = {}  # one per route

    def down(self, route: str, session: Any, answered_at: float, now: float) -> bool:
        since, failed = self._failing.get(route, (now, set()))
        if answered_at >= since:  # it answered after the first of these
            since, failed = now, set()
        if len(failed) < self.sessions:
            failed.add(session if isinstance(session, str) else "")
        self._failing[route] = (since, failed)
        return len(failed) >= self.sessions


def wait_start(soft_retried: Any, timeout: float, now: float) -> float:
    """When a request that just timed out started waiting on its session:
    at its first try if this is its same-session retry (which records that
    time in ``meta[M.SOFT_RETRIED]``), else *timeout* ago."""
    if type(soft_retried) is float and soft_retried <= now:
        return soft_retried
    return now - timeout
