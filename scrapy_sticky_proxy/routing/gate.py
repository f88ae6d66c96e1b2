"""Per-route admission: hold requests back while a route is unproven or down.

A route is the gateway (``host:port``) or one static proxy. Two situations
must not cost a full round of concurrent requests:

* **unproven credentials**: until one response has come back through the
  route, one request (the probe) goes and the others wait, so a wrong
  password costs one request before the spider closes. The wait is bounded
  (``probe_wait``): a probe that hangs, or ends without an answer from the
  route (a timeout, a reset, a middleware that dropped it), proved nothing
  and stops holding the others back;
* **outage**: when the route refuses connections, requests wait for a
  backoff (doubling up to a maximum) and one probe per backoff step tries
  again, instead of every request hammering a dead gateway. Requests that
  were in flight when it went down fail too and say nothing new: they
  neither extend the backoff nor send extra probes. After ``outage_timeout``
  waiting requests are given up (recorded); one probe per step still goes.

Pure logic: time is the ``now`` argument, and waiting is the caller's (a
``WAIT`` verdict says for how long at most; the gate calls ``on_change``
when waiting requests should decide again). A probe is recognised by a token
in its request facts (``facts[PROBE]``, the request's meta), not by being the
same object, so a copy of it that another middleware makes on the way down
(a new Request from ``process_request``) is still the probe and never waits
behind itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from .._meta import PROBE

Facts = MutableMapping[str, Any]  # a request's meta: plain, untrusted values

OUTAGE_FIRST_BACKOFF = 0.5

# Verdicts of RouteGate.decide().
GO = "go"
WAIT = "wait"
GIVE_UP = "give_up"
FAILED = "failed"
OPEN = "open"  # the state of a gate whose route works: requests go

_tokens = itertools.count(1)


@dataclass(frozen=True)
class GatePolicy:
    probe_wait: float = 10.0
    backoff_max: float = 10.0
    outage_timeout: float = 600.0


class RouteGate:
    __slots__ = (
        "answered_at",
        "backoff",
        "down_since",
        "not_before",
        "on_change",
        "policy",
        "probe",
        "probe_since",
        "state",
    )

    def __init__(
        self, policy: GatePolicy, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.policy = policy
        self.on_change = on_change
        # "unknown" (the next request probes) -> "probing" -> "open" | "failed"
        self.state = "unknown"
        self.probe = 0  # token of the probe in flight
        self.probe_since = 0.0
        self.down_since: float | None = None
        self.backoff = 0.0
        self.not_before = 0.0
        self.answered_at = -1.0  # when a response last came back through it

    # -- admission -------------------------------------------------------------

    def decide(self, facts: Facts, now: float) -> tuple[str, float]:
        """What a request should do now: ``(GO, 0)``, ``(WAIT, seconds)`` (at
        most, then ask again), ``(GIVE_UP, 0)`` (the route has been down for
        longer than the outage timeout) or ``(FAILED, 0)`` (407)."""
        if self.state == "failed":
            return FAILED, 0.0
        probing = self.state == "probing"
        if probing and facts.get(PROBE) == self.probe:
            return GO, 0.0  # the probe itself, back through process_request
        policy = self.policy
        if self.down_since is not None:
            expired = now - self.down_since > policy.outage_timeout
            if self.not_before > now:
                return (GIVE_UP, 0.0) if expired else (WAIT, self.not_before - now)
            if probing and now - self.probe_since < policy.probe_wait:
                if expired:
                    return GIVE_UP, 0.0
                return WAIT, self.probe_since + policy.probe_wait - now
            return self._start_probe(facts, now)
        if self.state == "open":
            return GO, 0.0
        if not probing:
            return self._start_probe(facts, now)
        waited = now - self.probe_since
        if waited >= policy.probe_wait:
            # The first answer takes too long: stop holding requests back.
            self._settle("open")
            return GO, 0.0
        return WAIT, policy.probe_wait - waited

    def _start_probe(self, facts: Facts, now: float) -> tuple[str, float]:
        self.state = "probing"
        self.probe = facts[PROBE] = next(_tokens)
        self.probe_since = now
        return GO, 0.0

    def _settle(self, state: str) -> None:
        self.state = state
        self.on_change()  # requests waiting at this gate decide again

    # -- outcomes --------------------------------------------------------------

    def answered(self, facts: Facts, now: float) -> float | None:
        """A response came back through the route: it works. Returns how
        long it had been down, if it was."""
        facts.pop(PROBE, None)
        self.answered_at = now
        down_for = None if self.down_since is None else now - self.down_since
        self.down_since = None
        self.backoff = 0.0
        self.not_before = 0.0
        if self.state not in ("open", "failed"):
            self._settle("open")
        return down_for

    def refused(self, facts: Facts, now: float) -> float:
        """The route refused a connection. The first refusal starts an outage
        and a failed probe extends its backoff; other refusals come from
        requests already in flight and change nothing. Returns how long the
        route has been down (0 for the refusal that starts the outage)."""
        was_probe = facts.pop(PROBE, None) == self.probe and self.state == "probing"
        if self.down_since is None or was_probe:
            self._back_off(now)
        assert self.down_since is not None
        return now - self.down_since

    def inconclusive(self, facts: Facts, now: float) -> None:
        """The request ended without an answer from the route (a timeout, a
        reset, another middleware dropped it). If it was the probe, it proved
        nothing: during an outage it counts as a failed probe; otherwise stop
        holding requests back behind it."""
        if facts.pop(PROBE, None) != self.probe or self.state != "probing":
            return
        if self.down_since is not None:
            self._back_off(now)
        else:
            self._settle("open")

    def _back_off(self, now: float) -> None:
        """Start an outage, or extend its backoff after a failed probe; the
        next request after the backoff probes again."""
        if self.down_since is None:
            self.down_since = now
            self.backoff = OUTAGE_FIRST_BACKOFF
        else:
            self.backoff = min(self.backoff * 2, self.policy.backoff_max)
        self.not_before = now + self.backoff
        if self.state != "failed":
            self._settle("unknown")

    def failed(self) -> None:
        """The route rejected the credentials (407)."""
        self._settle("failed")

    def is_probe(self, facts: Facts) -> bool:
        """Whether *facts* are those of the probe this gate sent last."""
        return facts.get(PROBE) == self.probe

    @property
    def down(self) -> bool:
        return self.down_since is not None
