"""
Tests for twistproxy.redis: the Redis URL a store is configured with, and
a connection to a real server.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.redis_support import start_redis
from twistproxy.config import ConfigError
from twistproxy.redis import RedisAddress, connect, parse_url


class ParseURLTests(SynchronousTestCase):
    """
    L{parse_url} reads C{redis://} URLs and names the config path of a bad
    one.
    """

    def test_defaults(self):
        """
        Port 6379 and database 0 unless the URL says otherwise.
        """
        self.assertEqual(parse_url("redis://cache.internal", "p"), RedisAddress("cache.internal"))

    def test_full(self):
        """
        User, password (percent-decoded), port and database are read.
        """
        self.assertEqual(
            parse_url("redis://proxy:s%40cret@10.0.0.5:6380/3", "p"),
            RedisAddress("10.0.0.5", 6380, 3, "proxy", "s@cret"),
        )

    def test_password_only(self):
        """
        C{redis://:password@host} gives a password and no user name.
        """
        self.assertEqual(parse_url("redis://:pw@h", "p"), RedisAddress("h", password="pw"))

    def test_bad(self):
        """
        Wrong schemes, ports, databases, extras and types are config errors
        naming the path.
        """
        for bad in ["http://h", "redis://h:99999", "redis://h/x", "redis://h?db=1",
                    "redis://", "redis://h/1/2", 6379]:
            e = self.assertRaises(ConfigError, parse_url, bad, "cache.store.url")
            self.assertIn("cache.store.url", str(e))


class ConnectTests(TestCase):
    """
    L{connect} talks to a real C{redis-server} (started by the test, skipped
    where it is not installed).
    """

    def setUp(self):
        self.server = start_redis(self)

    @defer.inlineCallbacks
    def test_round_trip(self):
        """
        Values go in and come back as bytes, unconverted.
        """
        redis = connect(self.server.address)
        self.addCleanup(redis.disconnect)
        yield redis.set(b"twistproxy-test", b"\x00\xff 12")
        got = yield redis.get(b"twistproxy-test")
        self.assertEqual(got, b"\x00\xff 12")
        self.assertIn(b"\x00\xff 12", self.server.command("GET", "twistproxy-test"))
