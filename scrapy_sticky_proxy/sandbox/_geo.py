"""The sandbox's geo-IP database: the country each exit address is in.

A gateway session asked for in a country gets an exit there (the gateway
writes it here); the demo site looks its client address up, as a real site
looks up a geo-IP database, and shows the country. Exit addresses are unique
in the process, so one table serves every gateway.
"""

from __future__ import annotations

import threading

_COUNTRY: dict[str, str] = {}
_LOCK = threading.Lock()


def place_exit(ip: str, country: str) -> None:
    """Exit *ip* is in *country* (an ISO code, or "" for anywhere)."""
    with _LOCK:
        if country:
            _COUNTRY[ip] = country
        else:
            _COUNTRY.pop(ip, None)


def country_of(ip: str) -> str:
    """The country of address *ip*, "" if unknown."""
    with _LOCK:
        return _COUNTRY.get(ip, "")
