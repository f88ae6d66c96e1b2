"""The crawl's ban policy, and a custom policy's verdicts made safe to use.

A reason names the stat ``sticky_proxy/bans/<reason>`` and goes into logs
and give-up records, so a ``STICKY_PROXY_BAN_POLICY`` of the user's is
answered as untrusted input: a reason built from a response (its URL, a
header) must neither grow the stats without bound nor carry a password or
a line break into them. Its reasons are:

- the configured passwords redacted, every character but printable ASCII
  (no space) made ``_``, at most 64 characters;
- at most 32 different ones in a crawl; a new one past that is counted as
  ``policy/other``, with one warning;
- ``None`` for "no ban"; any other value that is not a ``str`` is judged
  by its truth (``False``: no ban; ``True``: the reason ``policy/bool``),
  with one warning.

The policy is built once per crawler, for the middleware and the cache
guard alike (so its ``from_crawler`` runs once). The default policy's
reasons are short and few already: it is used as it is.
"""

from __future__ import annotations

import logging
import re
import weakref
from typing import TYPE_CHECKING, Any

from scrapy.utils.misc import build_from_crawler

from .bans import BanPolicy
from .config import for_crawler

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

MAX_LENGTH = 64
MAX_REASONS = 32
OTHER = "policy/other"
_UNSAFE = re.compile(r"[^\x21-\x7e]")
_BY_CRAWLER: weakref.WeakKeyDictionary[Crawler, BanPolicy] = weakref.WeakKeyDictionary()


def ban_policy(crawler: Crawler) -> BanPolicy:
    """The crawl's ban policy: ``STICKY_PROXY_BAN_POLICY``'s, guarded, or
    the default one of the settings."""
    policy = _BY_CRAWLER.get(crawler)
    if policy is None:
        config = for_crawler(crawler)
        if config.ban_policy_cls:
            custom = build_from_crawler(config.ban_policy_cls, crawler)
            policy = GuardedPolicy(custom, config.redact)
        else:
            policy = BanPolicy.from_config(config)
        _BY_CRAWLER[crawler] = policy
    return policy


class GuardedPolicy(BanPolicy):
    """Stands in for a custom policy: asks it, and cleans what it answers."""

    def __init__(self, policy: BanPolicy, redact: Callable[[str], str]):
        # Not BanPolicy.__init__: the rules are the wrapped policy's.
        self.policy = policy
        self._redact = redact
        self._reasons: set[str] = set()
        self._warned: set[str] = set()

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
        if not isinstance(value, str):
            kind = type(value).__name__
            try:
                banned = bool(value)
            except Exception:  # a truth that raises: an odd value, no ban
                banned = False
            self._warn_once(
                f"type:{kind}",
                "STICKY_PROXY_BAN_POLICY: %s.%s returned a %s, not a reason (a "
                "str) or None; it is taken as %s",
                type(self.policy).__name__,
                method,
                kind,
                f"the ban reason policy/{kind}" if banned else "no ban",
            )
            if not banned:
                return None
            value = f"policy/{kind}"
        reason = _UNSAFE.sub("_", self._redact(value))[:MAX_LENGTH] or "policy"
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
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)
