"""The package's own signals, sent through ``crawler.signals``."""

#: Sent when the ``sticky_proxy/`` stats are about to be read (the progress
#: line, the summary at close): components that count locally, for speed,
#: write their counters to the stats now.
stats_wanted = object()
