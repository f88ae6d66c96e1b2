"""What the router hands out: a request's session, where it goes, how long
it waits, and why it must not wait any longer."""

from __future__ import annotations

from typing import NamedTuple

NO_PROXIES = "sticky_proxy_no_proxies_left"
UNREACHABLE = "sticky_proxy_gateway_unreachable"  # nothing ever answered
NEVER_ANSWERED = "unreachable/never_answered"  # give-up reason of its requests
OUTAGE = "unreachable/outage"  # give-up reason of requests held back too long
CLOSING = "spider_closing"  # give-up reason of requests held when it closed


# Named tuples: one of each is made per request, and a tuple is the
# cheapest immutable record (python -m bench --only per-request).


class Session(NamedTuple):
    """The session a key is on: counted as one use when it is handed out."""

    key: str
    generation: int
    id: str
    rotated: bool  # moved to a new generation by max age / max uses just now


class Decision(NamedTuple):
    """Where a request goes: ``proxy`` is ``scheme://host:port`` (never the
    credentials); ``route`` names the gateway or the static proxy."""

    session: str
    generation: int
    route: str
    proxy: str


class Wait(NamedTuple):
    """Wait at *route*'s gate for *seconds* at most, then ask again."""

    route: str
    seconds: float


class Held(Exception):
    """A request that must not wait any longer: record it with ``reason``
    (``None``: not the request's fault, the crawl stops; ``close`` then
    names the spider's close reason and message, if the router asks for it)."""

    def __init__(
        self,
        reason: str | None,
        message: str = "",
        close: tuple[str, str] | None = None,
    ):
        super().__init__(message or reason)
        self.reason = reason
        self.close = close
