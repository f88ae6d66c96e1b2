"""The demo spider in Redis mode: several processes (or Scrapyd nodes) share
one request queue, one dupefilter and what the sticky proxy learned.

Start URLs come from the Redis list ``demo_redis:start_urls``; see
docs/howto/redis.md for the commands. ``REDIS_MODE`` below is what turns a plain project
into a shared one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .demo import DemoSpider

try:
    from scrapy_redis.spiders import RedisSpider
except ImportError:  # the redis extra is not installed: `demo` must still run
    RedisSpider = None

REDIS_MODE: dict[str, Any] = {
    # scrapy-redis: a shared queue and dupefilter instead of per-process ones.
    "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
    "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
    # One dupefilter for every spider of the project (not one per spider),
    # so two spiders never fetch the same page twice.
    "SCHEDULER_DUPEFILTER_KEY": "demo:dupefilter",
    # Queue requests as JSON: scrapy-redis would pickle them otherwise.
    "SCHEDULER_SERIALIZER": "scrapy_sticky_proxy.serializer",
    "SCHEDULER_PERSIST": True,
    # Stop after this many idle seconds with nothing left in Redis.
    "MAX_IDLE_TIME_BEFORE_CLOSE": 5,
    # Burned sessions, proxy health and give-ups shared through Redis too.
    "STICKY_PROXY_BACKEND": "redis",
    "STICKY_PROXY_NAMESPACE": "demo:sticky",
}


if RedisSpider is None:

    class DemoRedisSpider(DemoSpider):
        name = "demo_redis"

        def __init__(self, *args: Any, **kwargs: Any):
            raise RuntimeError(
                "demo_redis needs scrapy-redis: "
                "pip install 'scrapy-sticky-proxy[redis]'"
            )

else:

    class DemoRedisSpider(RedisSpider, DemoSpider):
        name = "demo_redis"
        custom_settings = REDIS_MODE

        async def start(self) -> AsyncIterator[Any]:
            # scrapy-redis reads start URLs in start_requests(); DemoSpider's
            # start() (the embedded sandbox) does not apply in Redis mode.
            for request in self.start_requests():
                yield request

        def parse(self, response: Any, **kwargs: Any) -> Any:
            # Start URLs from Redis may be index pages or item pages.
            if "/item/" in response.url:
                return self.parse_item(response)
            return self.parse_index(response)
