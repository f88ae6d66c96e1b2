"""Request.meta keys. Public ones are documented in docs/reference/meta.md
(tests/test_reference.py checks); the ones that start with an underscore
are private and may change."""

# public
KEY = "sticky_proxy_key"
DONT = "dont_sticky_proxy"
MAX_REROLLS = "sticky_proxy_max_rerolls"
SESSION = "sticky_proxy_session"
GENERATION = "sticky_proxy_generation"
COUNTRY = "sticky_proxy_country"
TIER = "sticky_proxy_tier"  # output: the proxy tier the request went through
POOL = "sticky_proxy_pool"

# private
ROUTE = "_sticky_proxy_route"  # gateway host:port or static proxy id we routed to
SLOT = "_sticky_proxy_slot"  # we set download_slot (static proxies)
POOL_SLOT = "_sticky_proxy_pool_slot"  # we set download_slot (a pool member's)
PROBE = "_sticky_proxy_probe"  # this request tests the route's credentials
REROLLS = "_sticky_proxy_rerolls"
REASONS = "_sticky_proxy_reasons"
SOFT_RETRIED = "_sticky_proxy_soft_retried"  # this session already had its retry
TOLERATED = "_sticky_proxy_tolerated"  # ban verdicts this session spared this request
NOT_BEFORE = "_sticky_proxy_not_before"  # a tolerated retry waits until (Unix time)
TRAIL = "_sticky_proxy_trail"  # whose bookkeeping this is, and the spider's request
CACHE_BYPASS = "_sticky_proxy_cache_bypass"  # we set dont_cache; the user's value
CACHE_HOP = "_sticky_proxy_cache_hop"  # a copy's redirect, stored: its next hop is not
LEDGER = "_sticky_proxy_ledger"  # id of the routed request this one continues
RENEWED = "_sticky_proxy_renewed"  # the last tier its re-rolls started again on
ROUTE_WAITS = "_sticky_proxy_route_waits"  # waits for a route failing every session
MOVED = "_sticky_proxy_moved"  # sent again once: its session was burned as it waited
WARMUP = "_sticky_proxy_warmup"  # a warm-up request of (state key, generation)
