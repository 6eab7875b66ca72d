"""
Tests for L{twistproxy.dns.texts}: TXT records set at run time, in one
process or shared by several through Redis (a fake pool on a fake clock,
and a real C{redis-server}).
"""

from __future__ import annotations

from typing import Dict

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistproxy.dns.texts import KEY, SYNC, RunTimeTexts, SharedStoreUnavailable
from twistproxy.redis import RETRY, RedisAddress


class FakeRedis:
    """
    The commands L{RunTimeTexts} sends, on one dict of hashes; while
    C{out}, every command fails as a lost connection would.
    """

    def __init__(self) -> None:
        self.hashes: Dict[bytes, Dict[bytes, bytes]] = {}
        self.out = False

    def _answer(self, compute):
        if self.out:
            return fail(ConnectionError("connection refused"))
        return succeed(compute())

    def hset(self, key, field, value):
        return self._answer(lambda: self.hashes.setdefault(key, {}).__setitem__(
            field.encode(), value))

    def hdel(self, key, field):
        return self._answer(lambda: int(self.hashes.get(key, {}).pop(field.encode(), None)
                                        is not None))

    def hgetall(self, key):
        return self._answer(lambda: dict(self.hashes.get(key, {})))

    def eval(self, script, keys, args):
        field, data = args
        fields = self.hashes.get(keys[0], {})

        def delete_if_same():
            if fields.get(field) == data:
                del fields[field]
                return 1
            return 0

        return self._answer(delete_if_same)

    def ping(self):
        return self._answer(lambda: b"PONG")


def shared(clock: Clock, redis: FakeRedis) -> RunTimeTexts:
    """
    A started L{RunTimeTexts} whose Redis is C{redis}.
    """
    texts = RunTimeTexts(clock, RedisAddress("127.0.0.1", 1))
    texts._redis._pool = redis
    texts.start()
    return texts


def answered(texts: RunTimeTexts, name: bytes):
    """
    The values that the DNS fronts answer for C{name}.
    """
    return [r.payload.data for r in texts.records.records(name) or ()]


class LocalTests(SynchronousTestCase):
    """
    Without Redis, the records are the process's own.
    """

    def test_set_remove(self) -> None:
        """
        L{RunTimeTexts.set} answers at once and fires; L{RunTimeTexts.remove}
        fires with whether there were records.
        """
        texts = RunTimeTexts(Clock())
        self.assertIsNone(self.successResultOf(texts.set("A.Example.TEST.", ["x"])))
        self.assertEqual(answered(texts, b"a.example.test"), [[b"x"]])
        self.assertEqual(texts.items(), {"a.example.test": (("x",), 60, 3600.0)})
        self.assertIs(self.successResultOf(texts.remove("a.example.test")), True)
        self.assertIs(self.successResultOf(texts.remove("a.example.test")), False)
        self.assertEqual(answered(texts, b"a.example.test"), [])

    def test_expiry(self) -> None:
        """
        A record is no longer answered once its lifetime is over, within
        L{SYNC} seconds.
        """
        clock = Clock()
        texts = RunTimeTexts(clock)
        texts.start()
        texts.set("a.example.test", ["x"], lifetime=10)
        clock.advance(9)
        self.assertEqual(answered(texts, b"a.example.test"), [[b"x"]])
        clock.advance(SYNC)
        self.assertEqual(answered(texts, b"a.example.test"), [])
        self.assertEqual(texts.items(), {})
        self.successResultOf(texts.stop())


class SharedTests(SynchronousTestCase):
    """
    With Redis, what is set or removed through one instance is answered by
    every instance within L{SYNC} seconds; while Redis is out, the local
    copy answers as it was and changes are refused.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis()
        self.one = shared(self.clock, self.redis)
        self.other = shared(self.clock, self.redis)

    def test_shared(self) -> None:
        """
        A record set through one instance is answered by it at once and by
        the other after its next read; removed, it goes from both the same
        way.
        """
        self.successResultOf(self.one.set("_acme-challenge.example.test", ["t1", "t2"], ttl=5))
        name = b"_acme-challenge.example.test"
        self.assertEqual(answered(self.one, name), [[b"t1"], [b"t2"]])
        self.assertEqual(answered(self.other, name), [])
        self.clock.advance(SYNC)
        self.assertEqual(answered(self.other, name), [[b"t1"], [b"t2"]])
        self.assertEqual(self.other.items()[name.decode()][:2], (("t1", "t2"), 5))
        self.assertIs(self.successResultOf(self.other.remove(name.decode())), True)
        self.assertEqual(answered(self.other, name), [])
        self.clock.advance(SYNC)
        self.assertEqual(answered(self.one, name), [])
        self.assertEqual(self.redis.hashes[KEY], {})

    def test_outage(self) -> None:
        """
        While Redis is out, each instance answers the records it had, and
        setting or removing fails with L{SharedStoreUnavailable} (nothing
        changes); once Redis answers again, the instances read what it
        holds.
        """
        name = b"a.example.test"
        self.successResultOf(self.one.set("a.example.test", ["x"]))
        self.clock.advance(SYNC)
        self.redis.out = True
        self.clock.advance(SYNC)
        for _ in range(3):
            self.clock.advance(RETRY)
        self.assertEqual(answered(self.other, name), [[b"x"]])
        self.failureResultOf(self.one.set("b.example.test", ["y"]), SharedStoreUnavailable)
        self.failureResultOf(self.other.remove("a.example.test"), SharedStoreUnavailable)
        self.assertEqual(answered(self.one, b"b.example.test"), [])
        self.assertEqual(answered(self.other, name), [[b"x"]])
        # Meanwhile, the record went (an operator, another instance).
        self.redis.hashes[KEY].clear()
        self.redis.out = False
        for _ in range(3):
            self.clock.advance(RETRY)
        self.assertEqual((answered(self.one, name), answered(self.other, name)), ([], []))

    def test_expiry(self) -> None:
        """
        An expired record is answered by no instance and removed from
        Redis, unless it was set again since it was read.
        """
        self.successResultOf(self.one.set("a.example.test", ["x"], lifetime=5))
        self.clock.advance(5)
        self.assertEqual(answered(self.other, b"a.example.test"), [])
        self.assertEqual(self.redis.hashes[KEY], {})
        self.successResultOf(self.one.set("b.example.test", ["y"], lifetime=100))
        stale = self.redis.hashes[KEY][b"b.example.test"]
        self.one._expire(b"b.example.test", stale + b" ")
        self.assertEqual(answered(self.other, b"b.example.test"), [])
        self.clock.advance(SYNC)
        self.assertEqual(answered(self.other, b"b.example.test"), [[b"y"]])

    def test_stale_read(self) -> None:
        """
        A read sent before a change made here does not undo the change.
        """
        self.successResultOf(self.one.set("a.example.test", ["x"]))
        self.one._read({}, self.one._writes - 1)
        self.assertEqual(answered(self.one, b"a.example.test"), [[b"x"]])
        self.one._read({}, self.one._writes)
        self.assertEqual(answered(self.one, b"a.example.test"), [])


class RealRedisTests(TestCase):
    """
    Two instances sharing a real C{redis-server}.
    """

    @inlineCallbacks
    def test_shared(self):
        """
        A record set through one instance is answered by the other within
        a few reads.
        """
        from tests.redis_support import RedisServer

        server = RedisServer()
        self.addCleanup(server.stop)
        one = RunTimeTexts(reactor, server.address, sync=0.05)
        other = RunTimeTexts(reactor, server.address, sync=0.05)
        for texts in (one, other):
            texts.start()
            self.addCleanup(texts.stop)
        yield one.set("_acme-challenge.example.test", ["token"])
        for _ in range(100):
            if answered(other, b"_acme-challenge.example.test"):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(answered(other, b"_acme-challenge.example.test"), [[b"token"]])
        removed = yield other.remove("_acme-challenge.example.test")
        self.assertIs(removed, True)
        self.assertEqual(server.command("HLEN", KEY.decode()), b":0\r\n")


class ConfigTests(SynchronousTestCase):
    """
    C{[dns] redis}: checked with the configuration, fixed until a restart.
    """

    def write(self, path: str, options: str) -> None:
        from tests.test_dns_config import _text

        with open(path, "w") as f:
            f.write(_text('{ name = "www", type = "A", value = "192.0.2.7" }', options))

    def test_bad_url(self) -> None:
        """
        A C{redis} that is not a C{redis://} URL fails the check at
        C{dns.redis}, naming the file.
        """
        from twistproxy.build import validate
        from twistproxy.config import ConfigError, load

        path = self.mktemp()
        self.write(path, 'redis = "http://10.0.0.5"')
        with self.assertRaises(ConfigError) as e:
            validate(load(path))
        self.assertEqual((e.exception.path, e.exception.source), ("dns.redis", path))

    def test_reload(self) -> None:
        """
        The service's records are shared when C{redis} is set; a reload
        that changes it is refused, and the records stay.
        """
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy.config import load
        from twistproxy.service import ProxyService

        path = self.mktemp()
        self.write(path, 'redis = "redis://127.0.0.1:1"')
        service = ProxyService(load(path), MemoryReactorClock())
        self.assertIsNotNone(service.dns_texts._redis)
        texts = service.dns_texts
        self.write(path, "")
        [problem] = service.reload()
        self.assertIn("dns.redis", problem)
        self.assertIs(service.dns_texts, texts)
