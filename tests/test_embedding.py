"""
Tests for the configuration built in code that docs/embedding.rst shows:
filters and the cache as value objects from the public API.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistproxy import (
    Cache,
    Filter,
    Listener,
    ProxyConfig,
    Route,
    RouteCache,
    UpstreamGroup,
    server,
)
from twistproxy.testing import MemoryProxy

GET = b"GET /page HTTP/1.1\r\nHost: example.com\r\n\r\n"
ORIGIN = (b"HTTP/1.1 200 OK\r\nServer: Apache/2.4\r\nContent-Length: 5\r\n"
          b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\nhello")


class FiltersAndCacheFromCodeTests(SynchronousTestCase):
    """
    The listener's filters and the route's cache of the docs' example take
    effect when the configuration is built in code.
    """

    def setUp(self):
        config = ProxyConfig(
            listeners=(Listener("web", "tcp:8080", filters=(
                Filter("access", {"deny": ["192.0.2.0/24"]}),
                Filter("headers", {"hide_banners": True}),
            )),),
            upstreams={"app": UpstreamGroup("app", (server("http://127.0.0.1:8001"),))},
            routes=(Route("app", cache=RouteCache(default_ttl=30.0)),),
            cache=Cache(options={"size": "128m"}),
        )
        self.proxy = MemoryProxy(config)

    def test_filters_and_cache(self):
        """
        A denied client gets 403; an allowed one gets the origin's answer
        without its banner, and a second request is a hit (the origin is
        asked once).
        """
        denied = self.proxy.connect_client("192.0.2.9")
        denied.send(GET)
        self.assertTrue(denied.received().startswith(b"HTTP/1.1 403 "))
        answers = []
        for _ in range(2):
            client = self.proxy.connect_client("198.51.100.7")
            client.send(GET)
            if self.proxy.backend_attempts():
                self.proxy.accept_backend().send(ORIGIN)
            answers.append(client.received())
        self.assertEqual(len(self.proxy.reactor.tcpClients), 1)
        for got in answers:
            self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got)
            self.assertTrue(got.endswith(b"hello"), got)
            self.assertNotIn(b"Apache", got)
        self.assertIn(b"Cache-Status: twistproxy; hit", answers[1])
