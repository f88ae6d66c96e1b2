"""Scrapy commands for ``COMMANDS_MODULE = "scrapy_sticky_proxy.commands"``.

:mod:`.crawl` replaces ``scrapy crawl`` with one that exits with a non-zero
status when this package closed the spider for a failure, for cron and CI.
(``scrapy sticky_proxy`` is registered through an entry point, not here.)
"""
