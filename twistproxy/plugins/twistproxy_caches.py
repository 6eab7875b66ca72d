# -*- test-case-name: tests.test_cache_store -*-
"""
The dropin that exports the built-in cache stores.
"""

from __future__ import annotations

from twistproxy.cache.memory import MemoryStoreFactory
from twistproxy.cache.redis import RedisStoreFactory

memoryStore = MemoryStoreFactory()
redisStore = RedisStoreFactory()
