"""``scrapy crawl``, with an exit status that tells a failed crawl.

Scrapy's ``crawl`` exits with 0 whatever the close reason; only a crawl
that could not start exits with 1. With this package, a crawl the
middleware closed because it cannot do its job (the proxy refused the
credentials, the shared store is unreachable, no static proxy is left, the
gateway never answered, the sessions' warm-ups kept failing, the warm-up
function is broken) is a failure
a cron job or a CI step should see.
A project opts in with ``COMMANDS_MODULE = "scrapy_sticky_proxy.commands"``
in settings.py (Scrapy picks the command before it reads ``-s``), and then
``scrapy crawl`` exits with :data:`EXIT_STATUS` for those reasons. The
status is set after the reactor has stopped, the way Scrapy sets its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.commands.crawl import Command as ScrapyCrawlCommand

from .._lifecycle import STORE_UNAVAILABLE
from ..middleware import AUTH_FAILED
from ..routing.decisions import NO_PROXIES, UNREACHABLE
from ..routing.warmup import WARMUP_ERROR, WARMUP_FAILED

if TYPE_CHECKING:
    import argparse

#: Close reasons that mean the crawl failed.
FAILURES = frozenset(
    {
        AUTH_FAILED,
        STORE_UNAVAILABLE,
        NO_PROXIES,
        UNREACHABLE,
        WARMUP_FAILED,
        WARMUP_ERROR,
    }
)
EXIT_STATUS = 1  # as Scrapy's own "the crawl did not start"


class Command(ScrapyCrawlCommand):
    def short_desc(self) -> str:
        return (
            "Run a spider of the current project, by name; exit with 1 if "
            "scrapy-sticky-proxy closed it for a failure"
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            super().run(args, opts)  # Scrapy's usage errors
            return
        assert self.crawler_process
        crawler = self._create_crawler(args[0])
        reasons: list[str] = []

        def closed(reason: str, **_: Any) -> None:
            reasons.append(reason)

        crawler.signals.connect(closed, signal=signals.spider_closed, weak=False)
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        if self.crawler_process.bootstrap_failed or FAILURES.intersection(reasons):
            self.exitcode = EXIT_STATUS
