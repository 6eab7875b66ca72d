# -*- test-case-name: tests.test_faults_cache -*-
"""
Fault tests of the cache (docs/faults.rst, "An origin down behind the
cache"): the installed proxy under twistd, with a cached route in front of
an origin on loopback that stores a response and then fails: it dies (its
port refuses connections, its open connections are reset), it accepts and
closes without answering, or it accepts and never answers.

Each test counts what clients see over real sockets.  Nothing in them
depends on a deadline being met: they only wait at least so long (for a
response to go stale, for a window to pass), so a loaded machine makes them
slower, not flaky.  Every proxy is stopped by its PID in cleanup, and every
origin connection is closed.
"""

from __future__ import annotations

from typing import List

from twisted.internet import defer, reactor

from tests.e2e_support import (
    HOST, OriginFactory, Response, RestartableOrigin, get_request, listener_config,
    one_per_connection,
)
from tests.test_e2e import _ProxyTestCase

# Requests sent while the origin is down, per test.
REQUESTS = 5
# How long a stored response stays fresh (max-age), and how long the tests
# wait for it to be stale.
FRESH = 1
STALE_AFTER = 1.5
# The stale_if_error window of the /short/ route.
SHORT_WINDOW = 1


class OriginDownTests(_ProxyTestCase):
    """
    A stored response, then an origin that fails: the cache answers for it
    within the route's stale_if_error window, where the response allows.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        # What the origin does with a request: "ok" answers (the
        # Cache-Control by path), "close" closes without answering,
        # "hang" never answers.
        self.mode = "ok"
        self.origin = RestartableOrigin(reactor, OriginFactory(self._handle), "origin")
        yield self.origin.start()
        self.addCleanup(self._stop_origin)
        self.proxy = yield self.start_configured_proxy(
            listener_config()
            + "[timeouts]\nupstream_response = 1\n\n"
            f'[upstreams.app]\nservers = ["http://{HOST}:{self.origin.port}"]\n\n'
            '[[routes]]\npath_prefix = "/short/"\nupstream = "app"\n'
            f"[routes.cache]\nstale_if_error = {SHORT_WINDOW}\n\n"
            '[[routes]]\nupstream = "app"\ncache = true\n')

    def _stop_origin(self) -> defer.Deferred:
        return self.origin.stop() if self.origin.running else self.close_origin_connections(
            self.origin.factory)

    def _handle(self, proto, req) -> None:
        if self.mode == "close":
            proto.transport.loseConnection()
            return
        if self.mode == "hang":
            return
        cc = b"max-age=%d" % FRESH
        if req.target.endswith(b"/must-revalidate"):
            cc += b", must-revalidate"
        body = b"stored " + req.target
        # The validator keeps the response stored well past the windows
        # (to be revalidated), so that what the tests see is the cache's
        # decision, not the entry having expired from the store.
        proto.transport.write(
            b'HTTP/1.1 200 OK\r\nCache-Control: %s\r\nETag: "1"\r\n'
            b"Content-Length: %d\r\n\r\n%s" % (cc, len(body), body))

    @staticmethod
    def _get(port: int, path: bytes, count: int) -> List[Response]:
        """
        In a thread: C{count} requests for C{path}, each on a new
        connection, and what came back.
        """
        return one_per_connection(port, get_request(path, host=b"faults.test"), count)

    @defer.inlineCallbacks
    def stored_then_stale(self, path: bytes):
        """
        Fetch C{path} once (stored), then wait until it is stale.
        """
        first, = yield self.in_thread(self._get, self.proxy.port, path, 1)
        self.assertEqual(first.status, 200)
        self.assertIn(b"stored", first.headers[b"cache-status"])
        yield self.sleep(STALE_AFTER)

    def assert_stale(self, responses: List[Response], path: bytes) -> None:
        """
        Every response is the stored one, served stale: Cache-Status says
        a hit after a forward for a stale response, with the 5xx the proxy
        would have sent (RFC 9211).
        """
        self.assertEqual([r.status for r in responses], [200] * len(responses))
        self.assertEqual({r.body for r in responses}, {b"stored " + path})
        for r in responses:
            status = r.headers[b"cache-status"]
            self.assertTrue(status.startswith(b"twistproxy; hit; fwd=stale; fwd-status=5"),
                            status)
            self.assertIn(b"detail=stale-if-error", status)

    @defer.inlineCallbacks
    def test_killed(self):
        """
        The origin dies (connections refused): clients get the stored
        response, stale, with Cache-Status saying so.
        """
        yield self.stored_then_stale(b"/page")
        yield self.origin.stop()
        responses = yield self.in_thread(self._get, self.proxy.port, b"/page", REQUESTS)
        self.assert_stale(responses, b"/page")

    @defer.inlineCallbacks
    def test_accepts_and_closes(self):
        """
        The origin accepts connections and closes them without answering:
        clients get the stored response, stale.
        """
        yield self.stored_then_stale(b"/page")
        self.mode = "close"
        responses = yield self.in_thread(self._get, self.proxy.port, b"/page", REQUESTS)
        self.assert_stale(responses, b"/page")
        self.assertGreaterEqual(len(self.origin.factory.requests), 1 + REQUESTS)

    @defer.inlineCallbacks
    def test_times_out(self):
        """
        The origin accepts and never answers: after the upstream timeout,
        clients get the stored response, stale.
        """
        yield self.stored_then_stale(b"/page")
        self.mode = "hang"
        responses = yield self.in_thread(self._get, self.proxy.port, b"/page", 2)
        self.assert_stale(responses, b"/page")
        self.assertIn(b"fwd-status=504", responses[0].headers[b"cache-status"])

    @defer.inlineCallbacks
    def test_must_revalidate_not_stale(self):
        """
        A response that says must-revalidate is never served stale: with
        the origin dead, clients get an error.
        """
        path = b"/must-revalidate"
        yield self.stored_then_stale(path)
        yield self.origin.stop()
        responses = yield self.in_thread(self._get, self.proxy.port, path, REQUESTS)
        self.assertEqual([r.status // 100 for r in responses], [5] * REQUESTS)
        self.assertNotIn(b"stored " + path, {r.body for r in responses})

    @defer.inlineCallbacks
    def test_past_window(self):
        """
        Past the route's stale_if_error window, the stored response is no
        longer served: with the origin dead, clients get an error.
        """
        path = b"/short/page"
        yield self.stored_then_stale(path)
        yield self.origin.stop()
        yield self.sleep(FRESH + SHORT_WINDOW + 0.5 - STALE_AFTER)
        responses = yield self.in_thread(self._get, self.proxy.port, path, REQUESTS)
        self.assertEqual([r.status // 100 for r in responses], [5] * REQUESTS)
        self.assertNotIn(b"stored " + path, {r.body for r in responses})
