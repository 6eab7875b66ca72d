"""
End-to-end tests of the shared cache: the installed twistproxy under
twistd, in front of a real origin over loopback, with a memory store (quick
mode) and with two proxy processes sharing one Redis.
"""

from __future__ import annotations


from twisted.internet import defer

from tests.e2e_support import RawClient, app_config
from tests.redis_support import start_redis
from tests.test_e2e import _ProxyTestCase


def _cacheable(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))


class CacheE2ETests(_ProxyTestCase):
    """
    The cache over real sockets.
    """

    def counting_origin(self):
        def handler(proto, req):
            proto.transport.write(_cacheable(b"body %d" % len(proto.factory.requests)))

        return self.start_origin(handler)

    @staticmethod
    def _many(port: int, count: int, path: bytes = b"/c"):
        client = RawClient(port)
        try:
            responses = []
            for _ in range(count):
                client.send(b"GET %s HTTP/1.1\r\nHost: e2e.test\r\n\r\n" % path)
                responses.append(client.read_response())
            return responses
        finally:
            client.close()

    @defer.inlineCallbacks
    def test_quick_mode(self):
        """
        twistd twistproxy --cache: twenty requests for one URL cost the
        origin one; the others are hits with Age and Cache-Status.
        """
        origin = self.counting_origin()
        proxy = yield self.start_proxy(origin.port, extra=["--cache", "--cache-size", "1m"])
        responses = yield self.in_thread(self._many, proxy.port, 20)
        self.assertEqual(len(origin.requests), 1)
        self.assertEqual({r.body for r in responses}, {b"body 1"})
        self.assertIn(b"stored", responses[0].headers[b"cache-status"])
        self.assertTrue(responses[5].headers[b"cache-status"].startswith(b"twistproxy; hit"))
        self.assertIn(b"age", responses[5].headers)

    @defer.inlineCallbacks
    def test_chunked_stored(self):
        """
        A chunked response from a real origin is stored and served again
        (with a Content-Length), not answered 502.
        """
        def handler(proto, req):
            proto.transport.write(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n3;x=1\r\ned!\r\n0\r\n\r\n")

        origin = self.start_origin(handler)
        proxy = yield self.start_proxy(origin.port, extra=["--cache"])
        responses = yield self.in_thread(self._many, proxy.port, 3)
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"chunked!")] * 3)
        self.assertIn(b"stored", responses[0].headers[b"cache-status"])
        self.assertTrue(responses[2].headers[b"cache-status"].startswith(b"twistproxy; hit"))
        self.assertEqual(responses[2].headers[b"content-length"], b"8")
        self.assertEqual(len(origin.requests), 1)

    @defer.inlineCallbacks
    def test_shared_redis(self):
        """
        Two proxy processes with one Redis store share the cache: what one
        fetched, the other serves without asking the origin.
        """
        server = start_redis(self)
        origin = self.counting_origin()
        proxies = []
        for name in ("a", "b"):
            proxy = yield self.start_configured_proxy(
                app_config(origin.port, route="cache = true\n")
                + f'[cache]\nstore = "redis"\nurl = "{server.url}"\n')
            proxies.append(proxy)
        first = yield self.in_thread(self._many, proxies[0].port, 1, b"/shared")
        second = yield self.in_thread(self._many, proxies[1].port, 2, b"/shared")
        self.assertEqual(len(origin.requests), 1)
        self.assertEqual([r.body for r in first + second], [b"body 1"] * 3)
        self.assertTrue(second[0].headers[b"cache-status"].startswith(b"twistproxy; hit"))
