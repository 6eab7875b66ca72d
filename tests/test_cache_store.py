"""
Tests for the cache stores: one contract (L{CacheStoreContractMixin}) run
against the memory store, the Redis store and the fake, and what is
particular to each.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests import test_cache
from tests.redis_support import start_redis
from twistproxy.cache.entry import Entry
from twistproxy.cache.mapping import MappingStore
from twistproxy.cache.memory import MemoryStore, MemoryStoreFactory
from twistproxy.cache.redis import RedisStore, RedisStoreFactory
from twistproxy.components import find_factory
from twistproxy.config import ConfigError
from twistproxy.interfaces import ICacheStoreFactory
from twistproxy.testing import CacheStoreContractMixin, FakeCacheStore


class _OnFakeClock(CacheStoreContractMixin):
    """
    The contract for a store on a fake clock: C{store_class(clock)}.
    """

    def setUp(self):
        self.clock = Clock()

    def makeStore(self):
        return self.store_class(self.clock)

    def advance(self, seconds):
        self.clock.advance(seconds)


class MemoryStoreContractTests(_OnFakeClock, TestCase):
    """
    The memory store keeps the store contract.
    """

    store_class = MemoryStore


class FakeStoreContractTests(_OnFakeClock, TestCase):
    """
    The fake store for tests keeps the store contract too.
    """

    store_class = FakeCacheStore


class MappingStoreContractTests(_OnFakeClock, TestCase):
    """
    A mapping store on a table of its plugin's keeps the store contract.
    """

    def makeStore(self):
        return MappingStore(self.clock, OrderedDict())


class MappingStoreTests(SynchronousTestCase):
    """
    What is particular to the mapping store.
    """

    def test_keeps_entries_in_the_table_given(self):
        """
        Entries are kept in the table its plugin gives it, each with its
        expiry time and tags, and one read after its expiry leaves it.
        """
        clock, table = Clock(), OrderedDict()
        store = MappingStore(clock, table)
        entry = Entry(200, b"OK", [], b"hi", 0.0, 0.0)
        store.put(b"k", entry, 10, [b"t"])
        self.assertEqual(table, {b"k": (entry, 10.0, (b"t",))})
        clock.advance(10)
        self.assertIsNone(self.successResultOf(store.get(b"k")))
        self.assertEqual(table, {})


class RedisStoreContractTests(CacheStoreContractMixin, TestCase):
    """
    The Redis store keeps the store contract, against a real redis-server
    (skipped where it is not installed).
    """

    def setUp(self):
        self.server = start_redis(self)

    def makeStore(self):
        store = RedisStore(reactor, self.server.address)
        self.addCleanup(store.close)
        return store

    def advance(self, seconds):
        # Redis expires keys on its own clock.
        return deferLater(reactor, seconds, lambda: None)


class RedisStoreTests(TestCase):
    """
    What is particular to the Redis store.
    """

    @defer.inlineCallbacks
    def test_shared(self):
        """
        Two stores (two proxy processes) on one server see each other's
        entries, under the namespace.
        """
        server = start_redis(self)
        one, two = RedisStore(reactor, server.address), RedisStore(reactor, server.address)
        self.addCleanup(one.close)
        self.addCleanup(two.close)
        entry = Entry(200, b"OK", [], b"shared", 1.0, 2.0)
        yield one.put(b"k\x00", entry, 60)
        self.assertEqual((yield two.get(b"k\x00")), entry)
        self.assertIn(b"twistproxy:cache:k", server.command("KEYS", "*"))

    @defer.inlineCallbacks
    def test_unreachable(self):
        """
        When Redis cannot be reached, lookups are misses and writes are
        dropped: the proxy keeps serving from the origin.  After the first
        failure the store does not wait for Redis any more (its circuit is
        open): it answers at once, and says it is not writable.
        """
        server = start_redis(self)
        address = server.address
        server.stop()
        store = RedisStore(reactor, address, timeout=0.2)
        self.addCleanup(store.close)
        self.assertTrue(store.writable())
        self.assertIsNone((yield store.get(b"k\x00")))
        self.assertFalse(store.writable())
        self.assertIsNone(self.successResultOf(store.get(b"k\x00")))
        yield store.put(b"k\x00", Entry(200, b"OK", [], b"", 1.0, 2.0), 60)
        self.assertEqual((yield store.purge(b"k")), 0)
        self.flushLoggedErrors()

    def test_garbage(self):
        """
        Bytes that are not an entry (another program's key) read as a miss.
        """
        self.assertIsNone(Entry.from_bytes(b"not json\nbody"))


class UnwritableStoreTests(test_cache.CacheHarness):
    """
    What the cache does while its store drops writes (a Redis store whose
    Redis is out).
    """

    def setUp(self):
        super().setUp()
        self.writable = False
        self.proxy.cache.writable = lambda: self.writable

    def test_not_announced_stored(self):
        """
        A storable response is passed on without C{stored} in
        C{Cache-Status}; once the store takes writes again, the next one
        is stored (the URL was not marked uncacheable meanwhile).
        """
        origin = test_cache.response(b"v1", b"Cache-Control: max-age=60")
        first = self.get(origin=origin)
        self.assertEqual(test_cache.field(first, b"Cache-Status"), b"twistproxy; fwd=uri-miss")
        self.get(origin=origin)
        self.assertIsNotNone(self.asked)
        self.writable = True
        second = self.get(origin=origin)
        self.assertEqual(test_cache.field(second, b"Cache-Status"),
                         b"twistproxy; fwd=uri-miss; stored; ttl=60")
        self.assertEqual(test_cache.body_of(self.stored()), b"v1")


class MemoryStoreTests(SynchronousTestCase):
    """
    The memory store's byte budget.
    """

    def test_lru_eviction(self):
        """
        Past the budget the least recently used entries go first.
        """
        clock = Clock()
        one = Entry(200, b"OK", [], b"x" * 1000, 0, 0)
        store = MemoryStore(clock, max_bytes=3 * (one.size + 10))
        for key in [b"a\x00", b"b\x00", b"c\x00"]:
            store.put(key, one, 60)
        store.lookup(b"a\x00")
        store.put(b"d\x00", one, 60)
        self.assertIsNone(store.lookup(b"b\x00"))
        self.assertIsNotNone(store.lookup(b"a\x00"))
        self.assertLessEqual(store.used, store.max_bytes)

    def test_too_large(self):
        """
        An entry larger than the whole budget is not stored.
        """
        store = MemoryStore(Clock(), max_bytes=2048)
        store.put(b"a\x00", Entry(200, b"OK", [], b"x" * 4096, 0, 0), 60)
        self.assertEqual(len(store), 0)
        self.assertEqual(store.used, 0)


class FactoryTests(SynchronousTestCase):
    """
    The store factories are plugins, found by name, that check their options.
    """

    def test_found(self):
        """
        C{memory} and C{redis} are found among the dropins.
        """
        for name, cls in [("memory", MemoryStoreFactory), ("redis", RedisStoreFactory)]:
            factory = find_factory(ICacheStoreFactory, name, "cache.store", "cache store")
            self.assertIsInstance(factory, cls)
            self.assertTrue(verifyObject(ICacheStoreFactory, factory))

    def test_memory_options(self):
        """
        The memory store takes a size; anything else is a config error.
        """
        store = MemoryStoreFactory().fromConfig(Clock(), {"size": "2m"}, "cache")
        self.assertEqual(store.max_bytes, 2 * 1024 * 1024)
        e = self.assertRaises(ConfigError, MemoryStoreFactory().fromConfig, Clock(),
                              {"sise": 1}, "cache")
        self.assertIn("cache.sise", str(e))
        e = self.assertRaises(ConfigError, MemoryStoreFactory().fromConfig, Clock(),
                              {"size": "lots"}, "cache")
        self.assertIn("cache.size", str(e))

    def test_redis_options(self):
        """
        The Redis store needs a valid URL.
        """
        factory = RedisStoreFactory()
        e = self.assertRaises(ConfigError, factory.fromConfig, Clock(), {}, "cache")
        self.assertIn("cache.url", str(e))
        e = self.assertRaises(ConfigError, factory.fromConfig, Clock(), {"url": "http://x"},
                              "cache")
        self.assertIn("cache.url", str(e))
        e = self.assertRaises(ConfigError, factory.fromConfig, Clock(),
                              {"url": "redis://x", "timeout": 0}, "cache")
        self.assertIn("cache.timeout", str(e))
