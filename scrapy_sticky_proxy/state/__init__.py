"""Where what the crawl learned is kept, internal: which generation each key
is on, static proxy health, give-up records. :class:`~.memory.MemoryStore`
for one process; :class:`~.redis_store.RedisStore` shares it through Redis.
"""
