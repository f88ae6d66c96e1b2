"""The names of every ``STICKY_PROXY_*`` setting, and the check that stops a
crawl whose settings hold one that is not among them (a misspelt
``STICKY_PROXY_BAN_PATERNS`` would otherwise be ignored, and captcha pages
would reach the spider as items).

An error, not a warning: a misspelt name changes what the crawl does without
a word, and a warning scrolls by in a long log (or in Scrapyd's, unread). The
way out is deliberate: ``STICKY_PROXY_EXTRA_SETTINGS`` lists the names of a
project's own ``STICKY_PROXY_*`` settings.

Only names set above add-on priority are checked (the project, the spider,
the command line): what Scrapy or an add-on writes is no user's typo.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from scrapy.settings import SETTINGS_PRIORITIES

from ..errors import ConfigError
from .readers import read_list

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

PREFIX = "STICKY_PROXY_"
EXTRA = "STICKY_PROXY_EXTRA_SETTINGS"

# Every setting the config package reads; tests/test_loud_config.py checks
# this against the names written in config/, tests/test_reference.py against
# docs/reference/settings.md.
KNOWN_SETTINGS = frozenset(
    {
        "STICKY_PROXY_ALLOW_HANDLERS",
        "STICKY_PROXY_ALLOW_SHARED_CONNECTIONS",
        "STICKY_PROXY_BACKEND",
        "STICKY_PROXY_BAN_EXCEPTIONS",
        "STICKY_PROXY_BAN_PATTERNS",
        "STICKY_PROXY_BAN_POLICY",
        "STICKY_PROXY_BAN_STATUSES",
        "STICKY_PROXY_BAN_TOLERANCE",
        "STICKY_PROXY_CONNECTIONS_PER_SESSION",
        "STICKY_PROXY_COUNTRY",
        "STICKY_PROXY_COOKIES_PER_SESSION",
        "STICKY_PROXY_ENABLED",
        "STICKY_PROXY_EXTRA_SETTINGS",
        "STICKY_PROXY_GAVE_UP_FILE",
        "STICKY_PROXY_INHERIT_KEY",
        "STICKY_PROXY_KEY",
        "STICKY_PROXY_LIST",
        "STICKY_PROXY_LIST_BACKOFF",
        "STICKY_PROXY_LIST_BACKOFF_MAX",
        "STICKY_PROXY_LIST_DEAD_AFTER",
        "STICKY_PROXY_LIST_UNHEALTHY_AFTER",
        "STICKY_PROXY_LOG_INTERVAL",
        "STICKY_PROXY_MAX_COOKIE_JARS",
        "STICKY_PROXY_MAX_KEYS",
        "STICKY_PROXY_MAX_REROLLS",
        "STICKY_PROXY_NAMESPACE",
        "STICKY_PROXY_OUTAGE_BACKOFF_MAX",
        "STICKY_PROXY_OUTAGE_TIMEOUT",
        "STICKY_PROXY_PLAYWRIGHT_IDLE_TIMEOUT",
        "STICKY_PROXY_PLAYWRIGHT_MAX_CONTEXTS",
        "STICKY_PROXY_POOL_MAX_IDLE",
        "STICKY_PROXY_PROBE_WAIT",
        "STICKY_PROXY_PROVIDER",
        "STICKY_PROXY_REDIS_TTL",
        "STICKY_PROXY_REDIS_URL",
        "STICKY_PROXY_RETRY_AFTER_MAX",
        "STICKY_PROXY_SERIALIZER_CLASSES",
        "STICKY_PROXY_SESSION_LIFETIME",
        "STICKY_PROXY_SHARE_COOKIES",
        "STICKY_PROXY_SESSION_MAX_AGE",
        "STICKY_PROXY_SESSION_MAX_USES",
        "STICKY_PROXY_SESSION_POOL",
        "STICKY_PROXY_SESSION_POOL_SIZE",
        "STICKY_PROXY_SESSION_POOL_SIZES",
        "STICKY_PROXY_SESSION_SLOTS",
        "STICKY_PROXY_SESSION_SLOT_CONCURRENCY",
        "STICKY_PROXY_SESSION_SLOT_DELAY",
        "STICKY_PROXY_SLOT_PER_PROXY",
        "STICKY_PROXY_TIERS",
        "STICKY_PROXY_TIER_BAN_RATE",
        "STICKY_PROXY_TIER_QUIET",
        "STICKY_PROXY_TIER_WINDOW",
        "STICKY_PROXY_TOLERANCE_BACKOFF",
        "STICKY_PROXY_UNREACHABLE_TIMEOUT",
        "STICKY_PROXY_URL",
        "STICKY_PROXY_WARMUP",
        "STICKY_PROXY_WARMUP_CHECK",
        "STICKY_PROXY_WARMUP_MAX_FAILURES",
        "STICKY_PROXY_WARMUP_TIMEOUT",
    }
)
_SUFFIXES = {name[len(PREFIX) :]: name for name in KNOWN_SETTINGS}


def check_names(settings: BaseSettings) -> None:
    """Raise :class:`ConfigError` naming the first unknown ``STICKY_PROXY_*``
    setting (and listing the others), with the closest known name."""
    extra = read_list(settings, EXTRA)
    for name in extra:
        if not isinstance(name, str):
            raise ConfigError(EXTRA, f"expected setting names, got {name!r}")
    above_addons = SETTINGS_PRIORITIES["addon"]
    unknown = sorted(
        name
        for name in settings
        if isinstance(name, str)
        and name not in KNOWN_SETTINGS
        and name not in extra
        and (settings.getpriority(name) or 0) > above_addons
        and (name.startswith(PREFIX) or _misspelt_prefix(name))
    )
    if not unknown:
        return
    first, *others = unknown
    problem = "not a setting of scrapy-sticky-proxy"
    if meant := _closest(first):
        problem += f"; did you mean {meant}?"
    if others:
        listed = ", ".join(
            f"{name} (did you mean {meant}?)" if (meant := _closest(name)) else name
            for name in others
        )
        problem += f"; nor {'are' if len(others) > 1 else 'is'} {listed}"
    raise ConfigError(
        first, f"{problem} (list your own STICKY_PROXY_* settings in {EXTRA})"
    )


def _misspelt_prefix(name: str) -> bool:
    """``sticky_proxy_key``, ``STICKY_PRXY_BAN_PATTERNS``: one of ours with
    the prefix itself mistyped (a user's setting, so only very close)."""
    if name.upper().startswith(PREFIX):
        return True
    return bool(difflib.get_close_matches(name, KNOWN_SETTINGS, n=1, cutoff=0.9))


def _closest(name: str) -> str | None:
    if not name.startswith(PREFIX):  # the prefix mistyped
        upper = name.upper()
        if upper in KNOWN_SETTINGS:
            return upper
        found = difflib.get_close_matches(upper, KNOWN_SETTINGS, n=1, cutoff=0.8)
        return found[0] if found else None
    # Matched without the prefix, which every candidate shares.
    found = difflib.get_close_matches(name[len(PREFIX) :], _SUFFIXES, n=1)
    return _SUFFIXES[found[0]] if found else None
