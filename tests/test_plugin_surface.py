"""
Tests for the typed plugin surface of L{twistproxy.interfaces}: the request
and response views plugins see, and the optional hooks, each declared by an
interface that the built-in plugins provide in full.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.cache.entry import Entry
from twistproxy.http.parser import ResponseHead
from twistproxy.interfaces import (
    IBackendAddress,
    ICacheEntry,
    IClosable,
    IProbingHealthCheck,
    IRequestView,
    IResponseView,
    ITLSHealthCheck,
)
from twistproxy.testing import make_exchange
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.health import HTTPHealthCheck, TCPHealthCheck


class RequestViewTests(SynchronousTestCase):
    """
    The proxy's exchange is the L{IRequestView} plugins see.
    """

    def test_provides(self) -> None:
        """
        An exchange provides L{IRequestView} in full.
        """
        self.assertTrue(verifyObject(IRequestView, make_exchange()))

    def test_attributes(self) -> None:
        """
        The view gives the request's method, target, normalised path, host,
        fields, client, scheme and trust, read from the exchange.
        """
        x = make_exchange("POST", "/a/./b//c?q=1", [("Accept", "*/*")],
                          client_address="192.0.2.9", host="Example.COM", trusted=True)
        self.assertEqual(
            (x.method, x.path, x.normalised_path, x.host, x.client_address, x.scheme,
             x.trusted, x.route_name),
            ("POST", "/a/./b//c?q=1", "/a/b/c", "example.com", "192.0.2.9", "http",
             True, None))
        self.assertEqual(x.headers, ((b"Host", b"Example.COM"), (b"Accept", b"*/*")))

    def test_headers_read_only(self) -> None:
        """
        C{headers} is a copy: changing it changes nothing sent upstream;
        C{replace_headers} is the way.
        """
        x = make_exchange(headers=[("Accept", "*/*")])
        with self.assertRaises(AttributeError):
            x.headers.append((b"X-Evil", b"1"))  # type: ignore[attr-defined]
        x.replace_headers(x.headers + ((b"X-User", b"alice"),))
        self.assertEqual(x.header("X-User"), "alice")
        self.assertIsInstance(x.request.headers, list)

    def test_route_name(self) -> None:
        """
        After routing, C{route_name} is the matched route's name.
        """
        from twistproxy.testing import MemoryProxy

        proxy = MemoryProxy()
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        [x] = proxy.exchanges
        self.assertEqual(x.route_name, x.route.route.name)
        self.assertIsInstance(x.route_name, str)


class ResponseViewTests(SynchronousTestCase):
    """
    A response head, from a backend or from the cache, is an
    L{IResponseView}.
    """

    def test_response_head(self) -> None:
        """
        A parsed response head provides L{IResponseView}.
        """
        from twistproxy.http.answers import own_head

        head = own_head(200, b"OK", [(b"Content-Type", b"text/plain")], 0)
        self.assertIsInstance(head, ResponseHead)
        self.assertTrue(verifyObject(IResponseView, head))

    def test_cache_entry(self) -> None:
        """
        A cache entry provides L{ICacheEntry}, and so L{IResponseView}.
        """
        entry = Entry(200, b"OK", [(b"ETag", b'"x"')], b"hi", 1.0, 2.0)
        self.assertTrue(verifyObject(ICacheEntry, entry))


class HookTests(SynchronousTestCase):
    """
    The built-in backends and health checks provide the optional
    interfaces they declare, in full.
    """

    def test_backend_address(self) -> None:
        """
        A backend tells health checks where it is.
        """
        backend = Backend("127.0.0.1:8001", "http", "127.0.0.1", 8001)
        self.assertTrue(verifyObject(IBackendAddress, backend))

    def test_http_check(self) -> None:
        """
        The C{http} check explains its answers and takes the group's TLS
        settings.
        """
        check = HTTPHealthCheck(MemoryReactorClock(), client=object())
        self.assertTrue(verifyObject(IProbingHealthCheck, check))
        self.assertTrue(verifyObject(ITLSHealthCheck, check))

    def test_tcp_check(self) -> None:
        """
        The C{tcp} check explains its answers.
        """
        self.assertTrue(verifyObject(IProbingHealthCheck, TCPHealthCheck(Clock())))

    def test_maxmind_locator(self) -> None:
        """
        The C{maxmind} locator is closed with its configuration (its
        database file).
        """
        from tests.test_locators import _FakeReader
        from twistproxy.upstream.locators import MaxMindLocator

        self.assertTrue(verifyObject(IClosable, MaxMindLocator(_FakeReader({}))))

    def test_rate_limit_buckets(self) -> None:
        """
        A rate limit closes its counters when they provide L{IClosable},
        as those it keeps in Redis do.
        """
        from twistproxy.filters.ratelimit import RateLimitFactory, RateLimitFilter

        built = RateLimitFactory().fromConfig(
            MemoryReactorClock(), {"rate": 1, "redis": "redis://127.0.0.1:1/0"}, "f")
        self.assertTrue(verifyObject(IClosable, built._buckets))
        closed = []

        @implementer(IClosable)
        class Buckets:
            def close(self) -> None:
                closed.append(True)

        RateLimitFilter(Buckets(), [str], 1).close()
        self.assertEqual(closed, [True])
