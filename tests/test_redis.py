"""
Tests for twistproxy.redis: the Redis URL a store is configured with, a
connection to a real server, and the circuit in front of it.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.redis_support import start_redis
from twistproxy.config import ConfigError
from twistproxy._redis_pool import LoggingIn
from twistproxy.redis import Circuit, RedisAddress, connect, parse_url


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


class ReconnectTests(TestCase):
    """
    L{connect}'s pool comes back by itself after Redis stalled, logging
    in again with a password and a database other than 0.
    """

    @defer.inlineCallbacks
    def test_after_stall(self):
        """
        A Redis stalled (C{SIGSTOP}) for longer than the timeout, while the
        pool reconnects and its logins time out, answers through the same
        pool once it goes on (C{SIGCONT}), in its database.
        """
        server = start_redis(self, password="s3cret", db=3)
        redis = connect(server.address, timeout=0.2, size=2)
        self.addCleanup(redis.disconnect)
        yield redis.set(b"k", b"before")
        server.pause()
        try:
            for _ in range(2):
                with self.assertRaises(Exception):
                    yield redis.get(b"k").addTimeout(0.3, reactor)
            # Long enough for the reconnected slots' logins to time out.
            yield deferLater(reactor, 1.5, lambda: None)
        finally:
            server.resume()
        got = None
        for _ in range(100):
            try:
                got = yield redis.get(b"k").addTimeout(0.3, reactor)
                break
            except Exception:
                yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(got, b"before")
        self.assertIn(b"before", server.command("GET", "k"))

    @defer.inlineCallbacks
    def test_refused_login_retried(self):
        """
        A server that refuses the password is logged once, not once per
        attempt, and asked again: once it takes the password, the pool
        answers.
        """
        server = start_redis(self, password="right")
        events = []
        self.patch(LoggingIn, "log", Logger(observer=events.append))
        redis = connect(RedisAddress(server.address.host, server.address.port,
                                     password="wrong"), timeout=0.5, size=1)
        self.addCleanup(redis.disconnect)
        # Three refused attempts of the pool's one connection.
        for _ in range(100):
            if server.stat("total_error_replies") >= 3:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertGreaterEqual(server.stat("total_error_replies"), 3)
        server.command("CONFIG", "SET", "requirepass", "wrong")
        got = None
        for _ in range(100):
            try:
                got = yield redis.ping().addTimeout(0.5, reactor)
                break
            except Exception:
                yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(got, "PONG")
        self.assertEqual(len(events), 1)
        self.assertIn("refused the login", formatEvent(events[0]))


class CircuitTests(SynchronousTestCase):
    """
    L{Circuit} stops sending commands to a Redis that failed, probes it in
    the background, and logs once each way.
    """

    def setUp(self):
        self.clock = Clock()
        self.probes = []
        self.events = []
        self.circuit = Circuit(self.clock, self._probe, 1.0, "cache store (Redis at h:1)",
                               "every lookup is a miss", retry=2.0)
        self.circuit.log = Logger(observer=self.events.append)

    def _probe(self):
        self.probes.append(Deferred())
        return self.probes[-1]

    def _logged(self):
        return [formatEvent(e) for e in self.events]

    def _open(self):
        d = self.circuit.call(lambda: fail(ConnectionError("Not connected")))
        self.failureResultOf(d, ConnectionError)

    def test_closed_sends(self):
        """
        Closed, a command is sent and its answer passed on; nothing is
        logged.
        """
        d = self.circuit.call(lambda: succeed(b"v"))
        self.assertEqual(self.successResultOf(d), b"v")
        self.assertTrue(self.circuit.closed)
        self.assertEqual(self.events, [])

    def test_timeout_opens(self):
        """
        A command unanswered within the timeout fails, and opens the
        circuit: the next commands are not sent (C{call} answers C{None}),
        with one log line for all of them.
        """
        d = self.circuit.call(Deferred)
        self.clock.advance(1.0)
        self.failureResultOf(d, TimeoutError)
        self.assertFalse(self.circuit.closed)
        sent = []
        for _ in range(5):
            self.assertIsNone(self.circuit.call(lambda: sent.append(1)))
        self.assertEqual(sent, [])
        (line,) = self._logged()
        self.assertIn("cache store (Redis at h:1): Redis is out", line)
        self.assertIn("every lookup is a miss until it answers", line)

    def test_probe_after_delay(self):
        """
        Open, the first call once the retry delay is over starts one probe
        in the background and still answers C{None}; calls while it is
        out start no other.
        """
        self._open()
        self.clock.advance(1.9)
        self.assertIsNone(self.circuit.call(lambda: succeed(None)))
        self.assertEqual(self.probes, [])
        self.clock.advance(0.1)
        self.assertIsNone(self.circuit.call(lambda: succeed(None)))
        self.assertIsNone(self.circuit.call(lambda: succeed(None)))
        self.assertEqual(len(self.probes), 1)

    def test_probe_answer_closes(self):
        """
        The probe's answer closes the circuit, logged once; commands are
        sent again.
        """
        self._open()
        self.clock.advance(2)
        self.circuit.call(lambda: succeed(None))
        self.probes[0].callback(b"PONG")
        self.assertTrue(self.circuit.closed)
        self.assertEqual(self.successResultOf(self.circuit.call(lambda: succeed(1))), 1)
        logged = self._logged()
        self.assertEqual(len(logged), 2)
        self.assertEqual(logged[1], "cache store (Redis at h:1): Redis answers again")

    def test_probe_failure_reopens(self):
        """
        A probe that fails, or is not answered in time, opens the circuit
        for another retry delay, without a log line.
        """
        self._open()
        self.clock.advance(2)
        self.circuit.call(lambda: succeed(None))
        self.clock.advance(1)
        self.assertFalse(self.circuit.closed)
        self.assertIsNone(self.circuit.call(lambda: succeed(None)))
        self.clock.advance(1.5)
        self.circuit.call(lambda: succeed(None))
        self.assertEqual(len(self.probes), 1)
        self.clock.advance(0.5)
        self.circuit.call(lambda: succeed(None))
        self.assertEqual(len(self.probes), 2)
        self.assertEqual(len(self.events), 1)

    def test_late_answer_keeps_open(self):
        """
        An answer to a command sent before the circuit opened does not
        close it: only a probe says Redis is back.
        """
        late = Deferred()
        self.circuit.call(lambda: late)
        self._open()
        late.callback(b"v")
        self.assertFalse(self.circuit.closed)
        self.assertEqual(len(self.events), 1)
