# -*- test-case-name: tests.test_cache_store -*-
"""
Kits for testing cache stores: L{FakeCacheStore}, a store in a dict, and
L{CacheStoreContractMixin}, the tests every L{ICacheStore} must pass.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from twistproxy.cache.mapping import MappingStore
from twistproxy.interfaces import ICacheStore


class FakeCacheStore(MappingStore):
    """
    An L{ICacheStore} in a dict, with no size limit, on a given clock; for
    tests of code that uses a store.
    """


class CacheStoreContractMixin:
    """
    Tests every L{ICacheStore} must pass.  Mix into a
    C{twisted.trial.unittest.TestCase} and define C{makeStore()} (which may
    return a L{Deferred}) and C{advance(seconds)}, which lets that much
    time pass for the store (a fake clock's C{advance}, or a real wait)
    and may return a L{Deferred}.
    """

    def _entry(self, body: bytes = b"hello", status: int = 200):
        from twistproxy.cache.entry import Entry

        return Entry(status, b"OK", [(b"Content-Type", b"text/plain"), (b"ETag", b'"x"')],
                     body, 100.0, 101.5, [b"accept-encoding"])

    def _store(self):
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(self.makeStore)

    def _steps(self, steps):
        from twisted.internet.defer import inlineCallbacks

        return inlineCallbacks(steps)()

    def test_interface(self):
        """
        The store provides L{ICacheStore}, and each optional hook it
        declares (L{ISynchronousCacheStore}, L{IFallibleCacheStore},
        L{IMeasuredCacheStore}).
        """
        from twistproxy.interfaces import (
            IFallibleCacheStore, IMeasuredCacheStore, ISynchronousCacheStore,
        )

        def steps():
            store = yield self._store()
            self.assertTrue(verifyObject(ICacheStore, store))
            for hook in (ISynchronousCacheStore, IFallibleCacheStore, IMeasuredCacheStore):
                if hook.providedBy(store):
                    verifyObject(hook, store)
        return self._steps(steps)

    def test_round_trip(self):
        """
        What is put under a key comes back equal, binary key and all; other
        keys are misses.
        """
        def steps():
            store = yield self._store()
            key = b"http://a.example/x?y\x00\x01v=1"
            yield store.put(key, self._entry(b"\x00\xffbody"), 60)
            got = yield store.get(key)
            self.assertEqual(got, self._entry(b"\x00\xffbody"))
            self.assertEqual(got.vary, (b"accept-encoding",))
            self.assertEqual(got.response_time, 101.5)
            self.assertIsNone((yield store.get(b"http://a.example/x?y\x00")))
        return self._steps(steps)

    def test_replace(self):
        """
        A second put under a key replaces the first.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"k\x00", self._entry(b"one"), 60)
            yield store.put(b"k\x00", self._entry(b"two"), 60)
            self.assertEqual((yield store.get(b"k\x00")).body, b"two")
        return self._steps(steps)

    def test_expiry(self):
        """
        An entry is not returned once its time to live is over.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"short\x00", self._entry(), 0.2)
            yield store.put(b"long\x00", self._entry(), 60)
            yield self.advance(0.5)
            self.assertIsNone((yield store.get(b"short\x00")))
            self.assertIsNotNone((yield store.get(b"long\x00")))
        return self._steps(steps)

    def test_delete(self):
        """
        C{delete} removes exactly one key.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"a\x00", self._entry(), 60)
            yield store.put(b"a\x00b", self._entry(), 60)
            yield store.delete(b"a\x00")
            yield store.delete(b"missing\x00")
            self.assertIsNone((yield store.get(b"a\x00")))
            self.assertIsNotNone((yield store.get(b"a\x00b")))
        return self._steps(steps)

    def test_purge_prefix(self):
        """
        C{purge} removes the keys that start with the prefix, glob
        characters taken literally, and says how many.
        """
        def steps():
            store = yield self._store()
            for key in [b"http://a/s/1\x00", b"http://a/s/2\x00x", b"http://a/t\x00",
                        b"http://a/[*]\x00", b"http://a/[x]\x00"]:
                yield store.put(key, self._entry(), 60)
            self.assertEqual((yield store.purge(b"http://a/s/")), 2)
            self.assertEqual((yield store.purge(b"http://a/[*]")), 1)
            self.assertIsNone((yield store.get(b"http://a/s/1\x00")))
            self.assertIsNotNone((yield store.get(b"http://a/t\x00")))
            self.assertIsNotNone((yield store.get(b"http://a/[x]\x00")))
        return self._steps(steps)

    def test_purge_tag(self):
        """
        C{purge_tag} removes the entries put with the tag, and no others.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"1\x00", self._entry(), 60, [b"p1", b"all"])
            yield store.put(b"2\x00", self._entry(), 60, [b"p2", b"all"])
            yield store.put(b"3\x00", self._entry(), 60)
            self.assertEqual((yield store.purge_tag(b"p1")), 1)
            self.assertIsNone((yield store.get(b"1\x00")))
            self.assertEqual((yield store.purge_tag(b"all")), 1)
            self.assertIsNone((yield store.get(b"2\x00")))
            self.assertIsNotNone((yield store.get(b"3\x00")))
            self.assertEqual((yield store.purge_tag(b"none")), 0)
        return self._steps(steps)
