"""
Tests for rate limits (GCRA in memory and in Redis) and connection limits
per client address.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.filter_support import filtered_proxy, request, status
from tests.redis_support import start_redis
from twistproxy.config import ConfigError
from twistproxy.filters.ratelimit import (
    ConnectionLimitFactory,
    MemoryBuckets,
    RateLimitFactory,
)
from twistproxy.interfaces import IConnectionFilter, IRequestFilter
from twistproxy.testing import make_exchange, run_filters

factory = RateLimitFactory()


class BucketTests(SynchronousTestCase):
    """
    The GCRA arithmetic of L{MemoryBuckets}.
    """

    def test_burst_then_rate(self):
        """
        A fresh key gets C{burst} requests at once, then one per
        C{1/rate} seconds; a refusal says how long to wait.
        """
        clock = Clock()
        buckets = MemoryBuckets(clock, rate=2.0, burst=3)
        results = [buckets.take("k") for _ in range(4)]
        self.assertEqual([r[0] for r in results], [True, True, True, False])
        # Seconds of slack left: a further request every 1/rate seconds.
        self.assertEqual([r[1] for r in results[:3]], [1.0, 0.5, 0.0])
        self.assertAlmostEqual(results[3][1], 0.5)
        clock.advance(0.5)
        self.assertTrue(buckets.take("k")[0])
        self.assertFalse(buckets.take("k")[0])
        self.assertTrue(buckets.take("other")[0])

    def test_refusals_do_not_count(self):
        """
        Refused requests do not push the next allowed one further away.
        """
        clock = Clock()
        buckets = MemoryBuckets(clock, rate=1.0, burst=1)
        buckets.take("k")
        for _ in range(100):
            self.assertFalse(buckets.take("k")[0])
        clock.advance(1.0)
        self.assertTrue(buckets.take("k")[0])

    def test_full_bucket_allows_at_any_time(self):
        """
        A fresh key is allowed at once whatever the time (no float
        rounding makes C{tat + T - burst * T} land just after C{now}).
        """
        clock = Clock()
        clock.advance(0.6)
        buckets = MemoryBuckets(clock, rate=1.0, burst=1)
        self.assertTrue(buckets.take("k")[0])
        self.assertFalse(buckets.take("k")[0])

    def test_forgets_idle_keys(self):
        """
        Keys whose bucket is full again are forgotten as the table grows,
        so memory follows the active clients.
        """
        clock = Clock()
        buckets = MemoryBuckets(clock, rate=10.0, burst=1)
        for i in range(1000):
            buckets.take(i)
        clock.advance(1)
        for i in range(1000, 1100):
            buckets.take(i)
        self.assertLessEqual(len(buckets._tat), 100)


class RateLimitFilterTests(SynchronousTestCase):
    """
    The rate_limit filter's answers and keys.
    """

    def _filter(self, clock=None, **options):
        options.setdefault("rate", 1)
        return factory.fromConfig(clock or Clock(), options, "f")

    def test_interface(self):
        """
        It provides L{IRequestFilter}.
        """
        verifyObject(IRequestFilter, self._filter())

    def test_429_with_fields(self):
        """
        Beyond the burst: 429 with C{Retry-After} and the C{RateLimit-*}
        fields.
        """
        f = self._filter(rate=0.5, burst=2)
        for _ in range(2):
            self.assertTrue(run_filters([f], make_exchange()))
        x = make_exchange()
        self.assertFalse(run_filters([f], x))
        sink = x.downstream
        self.assertEqual(sink.status, 429)
        self.assertEqual(sink.field(b"Retry-After"), b"2")
        self.assertEqual(sink.field(b"RateLimit-Limit"), b"2")
        self.assertEqual(sink.field(b"RateLimit-Remaining"), b"0")
        self.assertEqual(sink.field(b"RateLimit-Reset"), b"2")
        self.assertEqual(x.reason, "rate_limited")

    def test_rotating_forwarded_for_counts_as_one(self):
        """
        An untrusted client rotating C{X-Forwarded-For} and C{Forwarded}
        values is one key: its address.
        """
        f = self._filter(burst=3)
        passed = [
            run_filters([f], make_exchange(headers=[
                ("X-Forwarded-For", f"198.51.100.{i}"), ("Forwarded", f"for=203.0.113.{i}")]))
            for i in range(10)
        ]
        self.assertEqual(passed, [True] * 3 + [False] * 7)

    def test_trusted_proxy_clients_apart(self):
        """
        Behind a trusted proxy, each forwarded client has its own bucket.
        """
        f = self._filter(burst=1)
        for i in range(5):
            x = make_exchange(trusted=True, headers=[("Forwarded", f"for=198.51.100.{i}")])
            self.assertTrue(run_filters([f], x))

    def test_header_key_and_combination(self):
        """
        A header key counts per value; a combination keys on every part.
        """
        f = self._filter(burst=1, key="header:X-Api-Key")
        self.assertTrue(run_filters([f], make_exchange(headers=[("X-Api-Key", "a")])))
        self.assertTrue(run_filters([f], make_exchange(headers=[("X-Api-Key", "b")])))
        self.assertFalse(run_filters([f], make_exchange(
            client_address="192.0.2.99", headers=[("X-Api-Key", "a")])))
        f = self._filter(burst=1, key=["client", "header:X-Api-Key", "host"])
        self.assertTrue(run_filters([f], make_exchange(headers=[("X-Api-Key", "a")])))
        self.assertTrue(run_filters([f], make_exchange(
            client_address="192.0.2.99", headers=[("X-Api-Key", "a")])))
        self.assertTrue(run_filters([f], make_exchange(host="b.example")))
        self.assertFalse(run_filters([f], make_exchange(headers=[("X-Api-Key", "a")])))

    def test_route_key(self):
        """
        A route key counts each route's requests together, whoever sends
        them.
        """
        proxy = filtered_proxy(route=[{"name": "rate_limit", "rate": 1, "key": "route"}])
        self.assertEqual(status(request(proxy, client="192.0.2.1")[0]), 200)
        self.assertEqual(status(request(proxy, client="192.0.2.2")[0]), 429)
        proxy.reactor.advance(1)
        self.assertEqual(request(proxy, client="192.0.2.3")[0], b"")
        self.assertEqual(proxy.forwarder.groups["app"].in_flight, 1)

    def test_bad_options(self):
        """
        Bad rates, bursts and keys are refused with their paths.
        """
        for options, where in [
            ({}, "f.rate"),
            ({"rate": 0}, "f.rate"),
            ({"rate": "fast"}, "f.rate"),
            ({"rate": 1, "burst": 0}, "f.burst"),
            ({"rate": 1, "key": ["client", "cookie"]}, "f.key[1]"),
            ({"rate": 1, "key": "header:"}, "f.key[0]"),
            ({"rate": 1, "zone": "z"}, "f.zone"),
            ({"rate": 1, "redis": "http://x"}, "f.redis"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(Clock(), options, "f")
            self.assertEqual(e.exception.path, where, options)

    def test_missing_header_counts_by_client(self):
        """
        By default a request without the header a key names (or with it
        empty) is counted by its client's address: clients without it do
        not share one bucket, and one without it is not counted with a
        request whose header holds that address.
        """
        f = self._filter(burst=1, key="header:X-Api-Key")
        self.assertTrue(run_filters([f], make_exchange(client_address="192.0.2.1")))
        self.assertTrue(run_filters([f], make_exchange(client_address="192.0.2.2")))
        self.assertTrue(run_filters([f], make_exchange(
            client_address="192.0.2.3", headers=[("X-Api-Key", "192.0.2.1")])))
        self.assertFalse(run_filters([f], make_exchange(
            client_address="192.0.2.1", headers=[("X-Api-Key", "")])))

    def test_missing_header_shared(self):
        """
        With C{missing = "shared"} every request without the header counts
        in one bucket.
        """
        f = self._filter(burst=1, key=["header:X-Api-Key", "host"], missing="shared")
        self.assertTrue(run_filters([f], make_exchange(client_address="192.0.2.1")))
        self.assertFalse(run_filters([f], make_exchange(client_address="192.0.2.2")))
        self.assertTrue(run_filters([f], make_exchange(headers=[("X-Api-Key", "a")])))

    def test_missing_header_skip(self):
        """
        With C{missing = "skip"} a request lacking any header of the key is
        not counted, and does not use up the bucket of those that have it.
        """
        f = self._filter(burst=1, key=["header:X-Api-Key", "header:X-Tenant"], missing="skip")
        both = [("X-Api-Key", "a"), ("X-Tenant", "t")]
        for _ in range(3):
            self.assertTrue(run_filters([f], make_exchange(headers=both[:1])))
            self.assertTrue(run_filters([f], make_exchange()))
        self.assertTrue(run_filters([f], make_exchange(headers=both)))
        self.assertFalse(run_filters([f], make_exchange(headers=both)))

    def test_bad_missing(self):
        """
        C{missing} is one of C{client}, C{shared}, C{skip}, and only with a
        header key.
        """
        for options, problem in [
            ({"key": "header:X", "missing": "drop"},
             "must be 'client', 'shared' or 'skip', not 'drop'"),
            ({"key": "header:X", "missing": 1}, "must be a string, not an integer"),
            ({"key": ["client", "host"], "missing": "skip"}, "only with a 'header:NAME' key"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(Clock(), dict(options, rate=1), "f")
            self.assertEqual((e.exception.path, e.exception.problem), ("f.missing", problem))


class ConnectionLimitTests(SynchronousTestCase):
    """
    At most so many connections per client address.
    """

    def test_interface(self):
        """
        It provides L{IConnectionFilter}.
        """
        verifyObject(IConnectionFilter,
                     ConnectionLimitFactory().fromConfig(Clock(), {"max": 1}, "f"))

    def test_limit(self):
        """
        Beyond C{max} open connections from one address, a new one is
        closed at once; other addresses are not affected, and closing one
        makes room.
        """
        proxy = filtered_proxy(listener=[{"name": "connection_limit", "max": 2}])
        first = proxy.connect_client("192.0.2.7")
        second = proxy.connect_client("192.0.2.7")
        third = proxy.connect_client("192.0.2.7")
        other = proxy.connect_client("192.0.2.8")
        self.assertEqual([p.closed for p in (first, second, third, other)],
                         [False, False, True, False])
        third.close()
        first.close()
        fourth = proxy.connect_client("192.0.2.7")
        self.assertFalse(fourth.closed)
        fifth = proxy.connect_client("192.0.2.7")
        self.assertTrue(fifth.closed)

    def test_bad_max(self):
        """
        C{max} is required and positive.
        """
        for options in ({}, {"max": 0}):
            with self.assertRaises(ConfigError) as e:
                ConnectionLimitFactory().fromConfig(Clock(), options, "f")
            self.assertEqual(e.exception.path, "f.max")


class RedisOutageTests(SynchronousTestCase):
    """
    While Redis is out, a rate limit in Redis counts in this process at
    once, without waiting for Redis per request, and shares the limit
    again once Redis answers (on a fake clock and a fake pool).
    """

    def setUp(self):
        self.clock = Clock()
        self.f = factory.fromConfig(self.clock, {"rate": 0.01, "burst": 2,
                                                 "redis": "redis://127.0.0.1:1"}, "f")
        self.buckets = self.f._buckets
        self.sent = []

        class Pool:
            def eval(pool, script, keys, args):
                self.sent.append("eval")
                return self.answer()

            def ping(pool):
                self.sent.append("ping")
                return self.answer()

        self.buckets._redis._pool = Pool()
        self.buckets._redis.circuit.log = Logger(observer=lambda e: None)

    def test_out_then_back(self):
        """
        One request waits the Redis timeout and is counted in the process;
        the next ones are decided at once, by the process's count; a probe
        a second later finds Redis back, and the limit is Redis's again.
        """
        self.answer = defer.Deferred
        first = self.buckets.take("c")
        self.clock.advance(0.25)
        self.assertEqual(self.successResultOf(first)[0], True)
        self.assertEqual([d[0] for d in (self.buckets.take("c"), self.buckets.take("c"))],
                         [True, False])
        self.assertEqual(self.sent, ["eval"])
        self.answer = lambda: defer.succeed(b"PONG")
        self.clock.advance(1.0)
        self.buckets.take("c")
        self.assertEqual(self.sent, ["eval", "ping"])
        self.answer = lambda: defer.succeed([1, "0", "1"])
        self.assertEqual(self.successResultOf(self.buckets.take("c")), (True, 0.0, 1.0))
        self.assertEqual(self.sent, ["eval", "ping", "eval"])


class RedisRateLimitTests(TestCase):
    """
    Rate limits shared through a real C{redis-server} (skipped where it is
    not installed).
    """

    def setUp(self):
        self.server = start_redis(self)

    def _filter(self, **options):
        options = dict(rate=0.01, burst=3, redis=self.server.url, zone="t", **options)
        f = factory.fromConfig(reactor, options, "f")
        self.addCleanup(f.close)
        return f

    @defer.inlineCallbacks
    def _passes(self, f, **kw):
        x = make_exchange(**kw)
        passed = []
        from twistproxy.filters.chain import FilterChain

        FilterChain([f]).run(x, passed.append)
        for _ in range(200):
            if passed or x.status:
                break
            yield deferLater(0.01)
        defer.returnValue((bool(passed), x))

    @defer.inlineCallbacks
    def test_shared_between_processes(self):
        """
        Two filters (as two processes would have) on one Redis zone share
        one limit: three requests in all, then 429 with the fields.
        """
        a, b = self._filter(), self._filter()
        results = []
        for f in (a, b, a, b, a):
            passed, x = yield self._passes(f)
            results.append(passed)
        self.assertEqual(results, [True, True, True, False, False])
        self.assertEqual(x.downstream.status, 429)
        self.assertEqual(x.downstream.field(b"RateLimit-Limit"), b"3")
        self.assertIn(b"twistproxy:ratelimit:t:192.0.2.7",
                      self.server.command("KEYS", "*"))

    @defer.inlineCallbacks
    def test_redis_down_falls_back(self):
        """
        Without Redis, the process counts on its own instead of holding or
        refusing every request.
        """
        f = self._filter(redis_timeout=0.2)
        self.server.stop()
        results = []
        for _ in range(4):
            passed, x = yield self._passes(f)
            results.append(passed)
        self.assertEqual(results, [True, True, True, False])


def deferLater(seconds):
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)
