"""
Fault tests of the shared state in Redis (docs/faults.rst, "Shared state
(Redis)"): a real C{redis-server} stalled (C{SIGSTOP}, then C{SIGCONT}) or
killed and restarted on the same port, under two proxy processes that
share it through their cache or their rate limit, over loopback.

Each test counts what clients see: every request answered, none waiting
on Redis once a process knows it is out, and the sharing back once Redis
is.  Every test is bounded: a stall of a few seconds, a few dozen
requests, deadlines of at most 30 seconds for the recovery.
"""

from __future__ import annotations

import time

from twisted.internet import defer, reactor, task

from tests.e2e_support import RawClient
from tests.redis_support import start_redis
from tests.test_e2e_filters import _FilterTestCase

# Seconds Redis is stalled.
STALL = 4.0
# The stores' Redis timeout in these tests: a request that takes this long
# waited for Redis; one that did not wait takes far less, even on a loaded
# machine.
REDIS_TIMEOUT = 2.0
WAITED = 1.5
# Seconds the sharing has, once Redis is back, to be seen again.
RECOVERY = 30.0


def _cacheable(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))


class _Answer:
    """
    What a client saw of one request.
    """

    def __init__(self, status: int, cache_status: bytes, seconds: float):
        self.status = status
        self.cache_status = cache_status
        self.seconds = seconds

    @property
    def hit(self) -> bool:
        return self.cache_status.startswith(b"twistproxy; hit")

    def __repr__(self) -> str:
        return f"<{self.status} {self.cache_status!r} {self.seconds:.2f}s>"


def _get(port: int, path: bytes, client: bytes = b"c") -> _Answer:
    """
    In a thread: one GET on a new connection.
    """
    started = time.monotonic()
    connection = RawClient(port, timeout=10)
    try:
        connection.send(b"GET %s HTTP/1.1\r\nHost: faults.test\r\nX-Client: %s\r\n"
                        b"Connection: close\r\n\r\n" % (path, client))
        resp = connection.read_response()
    finally:
        connection.close()
    return _Answer(resp.status, resp.headers.get(b"cache-status", b""),
                   time.monotonic() - started)


class _RedisFaultCase(_FilterTestCase):
    """
    Two proxy processes in front of one origin, sharing one Redis.
    """

    timeout = 120

    def setUp(self):
        def handler(proto, req):
            proto.transport.write(_cacheable(b"body of " + req.target))

        self.origin = self.start_origin(handler)

    @defer.inlineCallbacks
    def start_two(self, redis, store: bool = False, rate_limit: bool = False):
        """
        Start two proxies with the Redis cache store (C{store}) or a rate
        limit in Redis (C{rate_limit}: 4 requests per C{X-Client} in all,
        per 100 s).

        @return: A L{Deferred} firing with both L{ProxyProcess}es.
        """
        listener, route = "", ""
        if rate_limit:
            listener = (
                'filters = [{ name = "rate_limit", rate = 0.01, burst = 4, '
                f'key = ["header:X-Client"], redis = "{redis.url}", zone = "faults", '
                f'redis_timeout = {REDIS_TIMEOUT} }}]\n')
        if store:
            route = (f'cache = true\n\n[cache]\nstore = "redis"\nurl = "{redis.url}"\n'
                     f"timeout = {REDIS_TIMEOUT}\n")
        proxies = []
        for _ in range(2):
            proxies.append((yield self.start_filtered(self.origin.port, listener, route)))
        return proxies

    def requests(self, proxies, count: int, path: bytes, client: bytes = b"c"):
        """
        C{count} requests, alternating between the proxies, one after the
        other.

        @return: A L{Deferred} firing with their L{_Answer}s.
        """
        def run():
            return [_get(proxies[i % 2].port, path, client) for i in range(count)]

        return self.in_thread(run)

    @defer.inlineCallbacks
    def stalled(self, redis, requests):
        """
        Stall Redis (C{SIGSTOP}) for L{STALL} seconds, or as long as
        C{requests} takes if longer, then let it go on (C{SIGCONT}).

        @param requests: A function returning a L{Deferred}, called once
            Redis is stalled.
        @return: A L{Deferred} firing with what C{requests}' fired with.
        """
        redis.pause()
        started = time.monotonic()
        try:
            answers = yield requests()
            left = STALL - (time.monotonic() - started)
            if left > 0:
                yield task.deferLater(reactor, left, lambda: None)
        finally:
            redis.resume()
        return answers

    @defer.inlineCallbacks
    def eventually(self, attempt, what: str):
        """
        Call C{attempt()} (returning a L{Deferred} of a boolean) every half
        second until it says C{True}, for at most L{RECOVERY} seconds.
        """
        deadline = time.monotonic() + RECOVERY
        while True:
            if (yield attempt()):
                return
            if time.monotonic() > deadline:
                self.fail(f"not within {RECOVERY} s: {what}")
            yield task.deferLater(reactor, 0.5, lambda: None)

    def assert_prompt(self, answers, proxies):
        """
        Each process waited for Redis on one request at most (the one that
        found it out), and answered the others at once.
        """
        waited = [a for a in answers if a.seconds >= WAITED]
        self.assertLessEqual(len(waited), len(proxies), answers)

    def assert_logged_once(self, proxies):
        """
        Each process logged once that Redis was out, and once that it was
        back.
        """
        for proxy in proxies:
            output = proxy.output.decode("utf-8", "replace")
            self.assertEqual((output.count("Redis is out"), output.count("Redis answers again")),
                             (1, 1), output)


class CacheStallTests(_RedisFaultCase):
    """
    The Redis cache store through a stall and a restart of Redis.
    """

    @defer.inlineCallbacks
    def stall_and_back(self, redis):
        proxies = yield self.start_two(redis, store=True)
        before = yield self.requests(proxies, 2, b"/kept")
        self.assertEqual([a.hit for a in before], [False, True], before)
        during = yield self.stalled(redis, lambda: self.requests(proxies, 8, b"/during"))
        self.assertEqual([a.status for a in during], [200] * 8)
        self.assertFalse([a for a in during if a.hit or b"stored" in a.cache_status], during)
        self.assert_prompt(during, proxies)

        @defer.inlineCallbacks
        def both_hit():
            answers = yield self.requests(proxies, 2, b"/kept")
            return all(a.hit for a in answers)

        yield self.eventually(both_hit, "both processes hit the entry kept in Redis")
        self.assert_logged_once(proxies)

    def test_stall(self):
        """
        While Redis is stalled, the cache answers every request from the
        origin, as a miss, without waiting for Redis on each request and
        without saying C{stored}; once Redis goes on, both processes hit
        what it kept again, by themselves.  Each logs once that Redis is
        out and once that it is back.
        """
        return self.stall_and_back(start_redis(self))

    def test_stall_with_password_and_database(self):
        """
        The same holds when the store logs in with a password to a
        database other than 0: the login after the stall is retried, not
        given up.
        """
        redis = start_redis(self, password="fault-secret", db=5)
        d = self.stall_and_back(redis)
        d.addCallback(lambda _: self.assertIn(b"twistproxy:cache:",
                                              redis.command("KEYS", "*")))
        return d

    @defer.inlineCallbacks
    def test_restart(self):
        """
        Redis killed and restarted on the same port (empty): the store
        reconnects by itself, and what one process stores the other hits
        again.
        """
        redis = start_redis(self)
        proxies = yield self.start_two(redis, store=True)
        before = yield self.requests(proxies, 2, b"/before")
        self.assertEqual([a.hit for a in before], [False, True], before)
        redis.restart()
        during = yield self.requests(proxies, 4, b"/restarted")
        self.assertEqual([a.status for a in during], [200] * 4)
        attempts = iter(range(1000))

        @defer.inlineCallbacks
        def shared_again():
            path = b"/after/%d" % next(attempts)
            answers = yield self.requests(proxies, 2, path)
            return not answers[0].hit and answers[1].hit

        yield self.eventually(shared_again, "a URL stored by one process is hit by the other")


class RateLimitStallTests(_RedisFaultCase):
    """
    The rate limit in Redis through a stall and a restart of Redis.
    """

    @defer.inlineCallbacks
    def check_shared(self, proxies, client: bytes):
        """
        Ten requests of C{client} alternating between the processes: 4
        pass when they share the limit, 8 when each counts its own.
        """
        answers = yield self.requests(proxies, 10, b"/limited", client)
        self.assertEqual({a.status for a in answers} - {200, 429}, set(), answers)
        return sum(a.status == 200 for a in answers)

    @defer.inlineCallbacks
    def back_to_shared(self, proxies):
        clients = (b"after-%d" % i for i in range(1000))

        @defer.inlineCallbacks
        def shared():
            return (yield self.check_shared(proxies, next(clients))) == 4

        yield self.eventually(shared, "two processes admit the shared 4 in all")

    @defer.inlineCallbacks
    def test_stall(self):
        """
        While Redis is stalled, each process counts in its own memory (the
        documented fallback), without waiting for Redis on each request;
        once Redis goes on, the two processes together admit the shared
        limit again, and each logs once that Redis is out and once that
        it is back.
        """
        redis = start_redis(self)
        proxies = yield self.start_two(redis, rate_limit=True)
        self.assertEqual((yield self.check_shared(proxies, b"before")), 4)
        during = yield self.stalled(
            redis, lambda: self.requests(proxies, 10, b"/limited", b"during"))
        # Five per process, of which each one's own burst of 4 pass: each
        # counts, in its own memory, rather than letting every request by.
        self.assertEqual([a.status for a in during], [200] * 8 + [429] * 2)
        self.assert_prompt(during, proxies)
        yield self.back_to_shared(proxies)
        self.assert_logged_once(proxies)

    @defer.inlineCallbacks
    def test_restart(self):
        """
        Redis killed and restarted on the same port: the processes share
        the limit again, by themselves.
        """
        redis = start_redis(self)
        proxies = yield self.start_two(redis, rate_limit=True)
        self.assertEqual((yield self.check_shared(proxies, b"before")), 4)
        redis.restart()
        during = yield self.requests(proxies, 4, b"/limited", b"during")
        self.assertEqual([a.status for a in during], [200] * 4)
        yield self.back_to_shared(proxies)
