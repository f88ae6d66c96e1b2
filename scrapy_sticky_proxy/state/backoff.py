"""When to ask an optional Redis again after it failed: :class:`Outage`.

Used by cookie sharing (``STICKY_PROXY_SHARE_COOKIES``), whose reads and
writes are waited for on the request path: after a failure, the crawl does
without Redis for a period that doubles from :data:`FIRST` up to
:data:`LONGEST`, then lets one call through (a probe) while the others still
do without, and is back to normal after any success.

Pure logic: no Scrapy, no I/O; time is a parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

FIRST = 1.0  # seconds without Redis after the first failure
LONGEST = 30.0  # the longest such period

#: What :meth:`Outage.admit` says a call should do.
Admission = Literal["call", "probe", "skip"]


class Outage:
    """The state of one dependency: up, or down until a time."""

    def __init__(
        self,
        first: float = FIRST,
        longest: float = LONGEST,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.first = first
        self.longest = longest
        self._clock = clock
        self.down = False
        self.delay = 0.0  # the current period
        self.until = 0.0  # no call before this, while down
        self.probing = False  # a probe is in flight

    def admit(self) -> Admission:
        """``call`` when up; when down, ``probe`` for the first call after
        the period (one at a time), ``skip`` for any other."""
        if not self.down:
            return "call"
        if self.probing or self._clock() < self.until:
            return "skip"
        self.probing = True
        return "probe"

    def failed(self, admission: Admission) -> bool:
        """A call failed: True if this starts an outage (log it once). A
        failed probe doubles the period; a call that started before the
        outage (and failed with it) changes nothing."""
        started = not self.down
        if started:
            self.down, self.delay = True, self.first
        elif admission == "probe":
            self.probing = False
            self.delay = min(self.delay * 2, self.longest)
        else:
            return False
        self.until = self._clock() + self.delay
        return started

    def succeeded(self) -> bool:
        """A call succeeded: True if this ends an outage."""
        was_down = self.down
        self.down = self.probing = False
        self.delay = 0.0
        return was_down

    def abandoned(self, admission: Admission) -> None:
        """A call ended with no answer either way (its request was
        cancelled): a probe frees the way for the next one."""
        if admission == "probe":
            self.probing = False
