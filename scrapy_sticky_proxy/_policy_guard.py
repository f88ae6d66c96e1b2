"""The crawl's ban policy, and a custom policy's verdicts made safe to use.

A reason names the stat ``sticky_proxy/bans/<reason>`` and goes into logs
and give-up records, so a ``STICKY_PROXY_BAN_POLICY`` of the user's is
answered as untrusted input: a reason built from a response (its URL, a
header) must neither grow the stats without bound nor carry a password or
a line break into them. Its reasons are:

- the configured passwords redacted (the forms ``routing/secrets.py``
  knows), then every character but printable ASCII (no space) made ``_``,
  then cut to 64 characters;
- at most 32 different ones in a crawl; a new one past that is counted as
  ``policy/other``, with one warning;
- ``None`` for "no ban"; any other value is judged by its truth, with one
  warning per type: a false one (``False``, ``0``, ``""``) is no ban, a
  true one that is not a ``str`` the reason ``policy/<its type>``
  (``policy/bool`` for ``True``).

The middleware and the HTTP cache guard each build the policy, as they
always did (a policy that keeps state sees each response once); the
guard's copy does not warn, as the middleware's warns of the same
answers. The default policy's reasons are short and few already: it is
used as it is.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from scrapy.utils.misc import build_from_crawler

from .bans import BanPolicy
from .config import for_crawler
from .routing.secrets import redact

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

MAX_LENGTH = 64
MAX_REASONS = 32
OTHER = "policy/other"
_UNSAFE = re.compile(r"[^\x21-\x7e]")


def reason_text(text: str) -> str:
    """*text* fit to name a stat or a record's reason: every character but
    printable ASCII (no space) made ``_``, cut to MAX_LENGTH."""
    return _UNSAFE.sub("_", text)[:MAX_LENGTH]


def ban_policy(crawler: Crawler, quiet: bool = False) -> BanPolicy:
    """A new ban policy of the crawl: ``STICKY_PROXY_BAN_POLICY``'s,
    guarded (*quiet*: without warnings), or the default one."""
    config = for_crawler(crawler)
    if not config.ban_policy_cls:
        return BanPolicy.from_config(config)
    custom = build_from_crawler(config.ban_policy_cls, crawler)
    return GuardedPolicy(custom, config.secrets, quiet)


class GuardedPolicy(BanPolicy):
    """Stands in for a custom policy (``.policy``): asks it, and cleans
    what it answers."""

    def __init__(self, policy: BanPolicy, secrets: tuple[str, ...], quiet: bool):
        # Not BanPolicy.__init__: the rules are the wrapped policy's.
        self.policy = policy
        self._secrets = secrets
        self._reasons: set[str] = set()
        # What was warned of; None: warn of nothing.
        self._warned: set[str] | None = None if quiet else set()

    def __getattr__(self, name: str) -> Any:
        # The wrapped policy's own attributes (its statuses, or any of yours).
        policy = self.__dict__.get("policy")
        if policy is None:
            raise AttributeError(name)
        return getattr(policy, name)

    def response_ban(self, response: Response) -> str | None:
        return self._clean(self.policy.response_ban(response), "response_ban")

    def exception_ban(self, exception: BaseException) -> str | None:
        return self._clean(self.policy.exception_ban(exception), "exception_ban")

    def _clean(self, value: Any, method: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            kind = type(value).__name__
            try:
                banned = bool(value)
            except Exception:  # a truth that raises: an odd value, no ban
                banned = False
            self._warn_once(
                f"type:{kind}",
                "STICKY_PROXY_BAN_POLICY: %s.%s returned a value of type %s, "
                "not a reason (a non-empty str) or None: a false one is taken "
                "as no ban, a true one as the ban reason policy/%s",
                type(self.policy).__name__,
                method,
                kind,
                kind,
            )
            if not banned:
                return None
            value = f"policy/{kind}"
        reason = reason_text(redact(value, self._secrets))
        if reason in self._reasons:
            return reason
        if len(self._reasons) >= MAX_REASONS:
            self._warn_once(
                "many",
                "STICKY_PROXY_BAN_POLICY: %s gave more than %d different ban "
                "reasons; the others are counted as %s (a reason names a stat: "
                "keep it one of a few fixed strings)",
                type(self.policy).__name__,
                MAX_REASONS,
                OTHER,
            )
            return OTHER
        self._reasons.add(reason)
        return reason

    def _warn_once(self, what: str, message: str, *args: object) -> None:
        if self._warned is not None and what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)
