"""
Tests for L{twistproxy.acme.shared}: one account and one certificate per
name shared by several instances through Redis, with a lock so that one
orders and the others pick the result up (on a fake clock, with a fake
Redis); and the Redis commands themselves against a private C{redis-server}.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.redis_support import start_redis
from tests.test_acme import DAY, START, acme_toml, issued
from twistproxy import build
from twistproxy.acme import store
from twistproxy.acme.shared import (
    LOCK_TTL, POLL, RedisKeys, SharedCertificates, SharedStoreUnavailable,
)
from twistproxy.config import ACME, ConfigError, parse
from twistproxy.redis import RedisAddress


class FakeKeys:
    """
    The commands of L{RedisKeys} on a dict, with lock expiry on C{clock};
    C{down} makes every command fail as a Redis that is out does.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.values: dict = {}
        self.expiry: dict = {}
        self.down = False

    def _alive(self, key: bytes):
        if key in self.expiry and self.expiry[key] <= self.clock.seconds():
            del self.values[key], self.expiry[key]
        return self.values.get(key)

    def _answer(self, value) -> Deferred:
        if self.down:
            return fail(SharedStoreUnavailable("the shared ACME store (Redis) is out"))
        return succeed(value)

    def get(self, key):
        return self._answer(None) if self.down else self._answer(self._alive(key))

    def put(self, key, value):
        if not self.down:
            self.values[key] = value
        return self._answer(None)

    def put_new(self, key, value):
        if self.down or self._alive(key) is not None:
            return self._answer(False)
        self.values[key] = value
        return self._answer(True)

    def lock(self, key, token, ttl):
        taken = not self.down and self._alive(key) is None
        if taken:
            self.values[key] = token
            self.expiry[key] = self.clock.seconds() + ttl
        return self._answer(taken)

    def extend(self, key, token, ttl):
        held = not self.down and self._alive(key) == token
        if held:
            self.expiry[key] = self.clock.seconds() + ttl
        return self._answer(held)

    def unlock(self, key, token):
        held = not self.down and self._alive(key) == token
        if held:
            del self.values[key], self.expiry[key]
        return self._answer(held)

    def close(self):
        return succeed(None)


class KeysContractMixin:
    """
    What L{SharedCertificates} relies on of its keys, for L{RedisKeys} and
    for L{FakeKeys} alike: C{keys()} makes the object under test.
    """

    @inlineCallbacks
    def test_get_put(self):
        """
        C{get} answers C{None} for a key never set, else the bytes put.
        """
        keys = self.keys()
        self.assertIsNone((yield keys.get(b"test:a")))
        yield keys.put(b"test:a", b"\x00value")
        self.assertEqual((yield keys.get(b"test:a")), b"\x00value")

    @inlineCallbacks
    def test_put_new_only_once(self):
        """
        C{put_new} sets a key that is not set, and leaves one that is.
        """
        keys = self.keys()
        self.assertTrue((yield keys.put_new(b"test:account", b"first")))
        self.assertFalse((yield keys.put_new(b"test:account", b"second")))
        self.assertEqual((yield keys.get(b"test:account")), b"first")

    @inlineCallbacks
    def test_lock_excludes_others(self):
        """
        A lock taken by one token cannot be taken, extended or released by
        another; its holder can extend and release it, after which another
        token takes it.
        """
        keys = self.keys()
        self.assertTrue((yield keys.lock(b"test:lock", b"one", 30)))
        self.assertFalse((yield keys.lock(b"test:lock", b"two", 30)))
        self.assertFalse((yield keys.extend(b"test:lock", b"two", 30)))
        self.assertFalse((yield keys.unlock(b"test:lock", b"two")))
        self.assertTrue((yield keys.extend(b"test:lock", b"one", 30)))
        self.assertTrue((yield keys.unlock(b"test:lock", b"one")))
        self.assertTrue((yield keys.lock(b"test:lock", b"two", 30)))


class FakeKeysContractTests(KeysContractMixin, TestCase):
    """
    L{FakeKeys} keeps the contract, so that the tests on it say something
    about Redis.
    """

    def keys(self):
        return FakeKeys(Clock())


class RedisKeysContractTests(KeysContractMixin, TestCase):
    """
    L{RedisKeys} against a private C{redis-server}.
    """

    timeout = 30

    def keys(self):
        from twisted.internet import reactor

        server = start_redis(self)
        keys = RedisKeys(reactor, server.address)
        self.addCleanup(keys.close)
        return keys

    @inlineCallbacks
    def test_lock_expires(self):
        """
        A lock taken with C{PX} is gone once its time is over, unless its
        holder extends it.
        """
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        keys = self.keys()
        self.assertTrue((yield keys.lock(b"test:lock", b"one", 0.2)))
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertTrue((yield keys.lock(b"test:lock", b"two", 30)))

    def test_out(self):
        """
        Every command fails with L{SharedStoreUnavailable} when Redis does
        not answer.
        """
        from twisted.internet import reactor

        from tests.e2e_support import HOST, unused_port

        keys = RedisKeys(reactor, RedisAddress(HOST, unused_port()))
        self.addCleanup(keys.close)
        return self.assertFailure(keys.get(b"test:a"), SharedStoreUnavailable)


def pem(days: float = 90, start=START) -> bytes:
    """
    A key and a CA-issued certificate as the storage file holds them.
    """
    cert = issued(days, start)
    return store.key_pem(store.new_key("ecdsa-p256")) + cert.public_bytes(
        serialization.Encoding.PEM)


class Fleet:
    """
    Instances that share one L{FakeKeys}, each with its storage directory;
    their orders wait until the test fires them.
    """

    def __init__(self, case: SynchronousTestCase, clock: Clock) -> None:
        self.case = case
        self.clock = clock
        self.keys = FakeKeys(clock)
        self.orders: list = []

    def instance(self, token: bytes) -> SharedCertificates:
        storage = self.case.mktemp()
        os.makedirs(storage)
        acme = ACME(email="ops@example.com", storage=storage,
                    directory="https://ca.example/dir")
        store.ensure(acme, ("www.example.com",), "p", START)
        return SharedCertificates(self.clock, acme, self.keys, token)

    def order(self, instance: SharedCertificates, forced: bool = False) -> Deferred:
        """
        L{SharedCertificates.obtain} on C{instance}, with an order that
        waits in L{orders} as C{(instance, Deferred)}.
        """
        def issue():
            d = Deferred()
            self.orders.append((instance, d))
            return d

        return instance.obtain(("www.example.com",), issue, forced)

    def issue(self, index: int = 0, data: bytes = b"") -> bytes:
        """
        Finish the order C{index}: write a new certificate into its storage.
        """
        instance, d = self.orders[index]
        data = data or pem()
        store.write_atomically(stored(instance), data)
        d.callback(stored(instance))
        return data


def stored(instance: SharedCertificates) -> str:
    return store.certificate_file(instance.acme, ("www.example.com",))


def read(filename: str) -> bytes:
    with open(filename, "rb") as f:
        return f.read()


class SharedCertificatesTests(SynchronousTestCase):
    """
    L{SharedCertificates.obtain}: one instance orders, the others wait for
    it and take its certificate.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp() + DAY)
        self.fleet = Fleet(self, self.clock)

    def test_one_orders_the_other_picks_up(self) -> None:
        """
        Two instances due together: the first takes the lock and orders;
        the second waits without ordering, and once the first's certificate
        is in Redis it writes that into its own storage.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        done_a, done_b = self.fleet.order(a), self.fleet.order(b)
        self.assertEqual([i for i, _ in self.fleet.orders], [a])
        self.clock.advance(POLL)
        self.assertNoResult(done_b)
        data = self.fleet.issue()
        self.successResultOf(done_a)
        self.clock.advance(POLL)
        self.successResultOf(done_b)
        self.assertEqual(len(self.fleet.orders), 1)
        self.assertEqual(read(stored(b)), data)

    def test_picks_up_without_lock(self) -> None:
        """
        A renewal due on an instance whose certificate another instance has
        renewed (not due itself) takes that one, without ordering.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        self.fleet.order(a)
        data = self.fleet.issue()
        self.successResultOf(self.fleet.order(b))
        self.assertEqual(len(self.fleet.orders), 1)
        self.assertEqual(read(stored(b)), data)

    def test_forced_orders(self) -> None:
        """
        A forced renewal orders even when Redis holds a certificate that is
        not due, and shares the new one.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        self.fleet.order(a)
        self.fleet.issue()
        forced = self.fleet.order(b, forced=True)
        self.assertEqual(len(self.fleet.orders), 2)
        data = self.fleet.issue(1)
        self.successResultOf(forced)
        self.successResultOf(self.fleet.order(a))
        self.assertEqual(read(stored(a)), data)

    def test_due_in_redis_is_ordered(self) -> None:
        """
        What Redis holds is not taken when it is due itself: the instance
        orders.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        self.fleet.order(a)
        self.fleet.issue(data=pem(days=1.2, start=START))
        self.fleet.order(b)
        self.assertEqual(len(self.fleet.orders), 2)

    def test_lock_kept_while_ordering(self) -> None:
        """
        The holder renews its lock while its order takes longer than the
        lock's lifetime: another instance still waits.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        self.fleet.order(a)
        done_b = self.fleet.order(b)
        for _ in range(int(3 * LOCK_TTL / POLL)):
            self.clock.advance(POLL)
        self.assertNoResult(done_b)
        self.assertEqual(len(self.fleet.orders), 1)

    def test_holder_gone(self) -> None:
        """
        When the holder stops renewing its lock (it died), the lock expires
        and a waiting instance orders itself.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        prefix = a._prefix
        self.fleet.keys.lock(prefix + b"lock:www.example.com", b"dead", LOCK_TTL)
        self.fleet.order(b)
        self.assertEqual(self.fleet.orders, [])
        self.clock.advance(LOCK_TTL + POLL)
        self.assertEqual([i for i, _ in self.fleet.orders], [b])

    def test_released_after_failure(self) -> None:
        """
        A failed order releases the lock and fails the renewal, so that the
        next instance (or the next try) can order.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        done = self.fleet.order(a)
        self.fleet.orders[0][1].errback(RuntimeError("the CA said no"))
        self.failureResultOf(done, RuntimeError)
        self.fleet.order(b)
        self.assertEqual(len(self.fleet.orders), 2)

    def test_redis_out(self) -> None:
        """
        While Redis is out a renewal fails at once with
        L{SharedStoreUnavailable}, orders nothing and leaves the stored
        certificate as it was.
        """
        a = self.fleet.instance(b"a")
        before = read(stored(a))
        self.fleet.keys.down = True
        self.failureResultOf(self.fleet.order(a), SharedStoreUnavailable)
        self.assertEqual(self.fleet.orders, [])
        self.assertEqual(read(stored(a)), before)

    def test_one_account(self) -> None:
        """
        The first instance to order makes the account key and shares it;
        another that orders writes that same key into its storage.
        """
        a, b = self.fleet.instance(b"a"), self.fleet.instance(b"b")
        self.fleet.order(a)
        self.fleet.issue()
        self.fleet.order(b, forced=True)
        account = read(store.account_file(a.acme))
        self.assertIn(b"PRIVATE KEY", account)
        self.assertEqual(read(store.account_file(b.acme)), account)

    def test_keys_by_directory(self) -> None:
        """
        Two CAs' certificates for the same name are kept apart.
        """
        a = self.fleet.instance(b"a")
        other = SharedCertificates(self.clock, ACME(
            email="ops@example.com", storage=a.acme.storage,
            directory="https://staging.example/dir"), self.fleet.keys)
        self.assertNotEqual(a._prefix, other._prefix)


class SharedConfigTests(SynchronousTestCase):
    """
    C{[acme] store} names the shared store.
    """

    def test_store(self) -> None:
        """
        A Redis URL gives the service a shared store, and renewals that go
        through it.
        """
        config = parse(acme_toml(self.mktemp(), extra='store = "redis://127.0.0.1:1/2"'))
        shared = build.acme_shared(config, Clock())
        self.assertIsInstance(shared, SharedCertificates)
        self.assertIsNone(build.acme_shared(parse(acme_toml(self.mktemp())), Clock()))

    def test_bad_url(self) -> None:
        """
        A store that is not a Redis URL is refused at C{acme.store}.
        """
        config = parse(acme_toml(self.mktemp(), extra='store = "http://x"'))
        with self.assertRaises(ConfigError) as raised:
            build.validate(config)
        self.assertIn("acme.store", str(raised.exception))
