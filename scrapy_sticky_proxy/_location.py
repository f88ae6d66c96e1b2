"""The country a request asks for (``meta["sticky_proxy_country"]``, or
STICKY_PROXY_COUNTRY), checked and turned into its session key: a key in two
countries is two sessions, each with its own generation, bans and exit.

A country that is no ISO 3166-1 alpha-2 code, or that a route cannot write
(:mod:`.routing.location`), gives the request up with a record: it is never
sent from somewhere else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import _meta as M
from .ledger import reasons
from .routing.location import LocationError, country_code, located_key
from .routing.tiers import MAX_TIERS, tiered_key

if TYPE_CHECKING:
    from scrapy import Request

    from ._stats import Counter
    from .config import StickyProxyConfig
    from .ledger import Ledger

logger = logging.getLogger("scrapy_sticky_proxy.middleware")


class Countries:
    def __init__(self, config: StickyProxyConfig, count: Counter, ledger: Ledger):
        self.default = config.country
        self.templates = [p.template for p in config.static_proxies]
        if config.gateway is not None:
            self.templates.append(config.gateway)
        for tier in config.tiers[1:]:  # STICKY_PROXY_TIERS: above are tier 1's
            self.templates += tier.templates
        self._count = count
        self._ledger = ledger
        self._said: set[str] = set()

    def key(self, request: Request, key: str) -> str:
        """The session key of *key* in the request's country (written back
        to meta, checked and in upper case); gives the request up
        (IgnoreRequest, recorded) when it cannot have that country."""
        meta = request.meta
        country = meta.get(M.COUNTRY)
        if country is None:
            country = self.default
        if country is None or country == "":  # "": anywhere, even with a default
            return key
        try:
            code = country_code(country)
            for template in self.templates:
                template.located(code)
        except LocationError as refused:
            self._refuse(request, refused)
        meta[M.COUNTRY] = code
        return located_key(key, code)

    def _refuse(self, request: Request, refused: LocationError) -> None:
        self._count.inc(f"country_refused/{refused.reason.partition('/')[2]}")
        if refused.reason not in self._said:
            self._said.add(refused.reason)
            logger.error(
                "A request asks for a country it cannot have: %s. Such requests "
                "are given up (reason %s), not sent elsewhere (said once)",
                refused,
                refused.reason,
            )
        self._ledger.give_up(request, [*reasons(request), refused.reason])


def state_key(meta: dict[str, Any]) -> str:
    """The session key a routed request's events are about (its key in its
    country, on its proxy tier), from the meta :meth:`Countries.key` and
    :meth:`~._tiers.Tiers.pick` wrote."""
    country = meta.get(M.COUNTRY)
    key = located_key(meta[M.KEY], country if isinstance(country, str) else None)
    tier = meta.get(M.TIER)
    if type(tier) is int and 1 < tier <= MAX_TIERS:
        return tiered_key(key, tier)
    return key
