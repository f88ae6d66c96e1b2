"""Choosing the health store backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.utils.asyncio import is_asyncio_available

from ..errors import ConfigError
from .memory import MemoryStore
from .store import HealthStore

if TYPE_CHECKING:
    from ..config import StickyProxyConfig


def make_store(config: StickyProxyConfig, spider: str) -> HealthStore:
    """The health store STICKY_PROXY_BACKEND asks for; the redis one is only
    imported (and its dependencies required) when chosen."""
    if config.backend == "memory":
        return MemoryStore(config.max_keys, config.rotation, config.gave_up_file)
    if not is_asyncio_available():
        raise ConfigError(
            "TWISTED_REACTOR",
            "the redis backend needs asyncio: use Scrapy's default "
            "AsyncioSelectorReactor",
        )
    # The config checked that the redis package is there.
    from .redis_store import RedisStore

    assert config.redis_url is not None
    return RedisStore(
        config.redis_url,
        config.namespace,
        ttl=config.redis_ttl,
        max_keys=config.max_keys,
        rotation=config.rotation,
        gave_up_file=config.gave_up_file,
        spider=spider,
        client_kwargs=config.redis_params,
    )
