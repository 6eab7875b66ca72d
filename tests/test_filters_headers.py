"""
Tests for the headers filter: request and response field edits, and
hiding the backends' banners.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.filter_support import field, filtered_proxy, filters, request
from tests.test_h2 import H2Client, _request
from twistproxy.config import (
    Cache, ConfigError, Limits, Listener, ProxyConfig, Route, RouteCache, Server, Timeouts,
    UpstreamGroup,
)
from twistproxy.filters.headers import HeadersFactory
from twistproxy.interfaces import IRequestFilter, IResponseFilter
from twistproxy.testing import MemoryProxy, make_exchange, run_filters, send_response

factory = HeadersFactory()

BANNERED = (b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.1 (Unix)\r\nX-Powered-By: PHP/5.3\r\n"
            b"X-AspNet-Version: 4.0\r\nContent-Length: 5\r\n\r\nhello")


class HeadersTests(SynchronousTestCase):
    """
    Field edits.
    """

    def test_interfaces(self):
        """
        It provides L{IRequestFilter} and L{IResponseFilter}.
        """
        f = factory.fromConfig(None, {"hide_banners": True}, "f")
        verifyObject(IRequestFilter, f)
        verifyObject(IResponseFilter, f)

    def test_request_edits(self):
        """
        Request fields are removed, set and added; the received list is
        not changed in place.
        """
        f = factory.fromConfig(None, {"request": {
            "remove": ["X-Drop"], "set": {"X-Set": "new"}, "add": {"X-Add": "more"}}}, "f")
        x = make_exchange(headers=[("X-Drop", "1"), ("X-Set", "old"), ("X-Add", "first")])
        received = x.request.headers
        before = list(received)
        self.assertTrue(run_filters([f], x))
        self.assertEqual(received, before)
        self.assertEqual(x.request.headers[1:], [
            (b"X-Add", b"first"), (b"X-Set", b"new"), (b"X-Add", b"more")])

    def test_response_edits_and_banners(self):
        """
        Response fields are edited and the banners hidden; the body passes
        untouched.
        """
        f = factory.fromConfig(None, {"hide_banners": True,
                                      "response": {"set": {"X-Frame-Options": "DENY"}}}, "f")
        x = make_exchange()
        self.assertTrue(run_filters([f], x))
        send_response(x, 200, [("Server", "nginx/1.2"), ("x-powered-by", "Express"),
                               ("X-Backend-Server", "app3.internal:8080"),
                               ("Content-Type", "text/plain")], [b"ok"], length=2)
        sink = x.downstream
        self.assertIsNone(sink.field(b"Server"))
        self.assertIsNone(sink.field(b"X-Powered-By"))
        self.assertIsNone(sink.field(b"X-Backend-Server"))
        self.assertEqual(sink.field(b"X-Frame-Options"), b"DENY")
        self.assertEqual(sink.field(b"Content-Type"), b"text/plain")
        self.assertEqual(sink.body, b"ok")

    def test_bad_options(self):
        """
        Framing fields, Host, unknown keys and an empty filter are refused
        with their paths.
        """
        for options, where in [
            ({"request": {"set": {"Content-Length": "1"}}}, "f.request"),
            ({"request": {"set": {"Host": "x"}}}, "f.request"),
            ({"response": {"replace": {}}}, "f.response.replace"),
            ({}, "f"),
            ({"hide_banners": "yes"}, "f.hide_banners"),
        ]:
            with self.assertRaises(ConfigError) as e:
                factory.fromConfig(None, options, "f")
            self.assertEqual(e.exception.path, where, options)

    def test_in_proxy(self):
        """
        On a listener: the backend gets the edited request, the client a
        response without banners.
        """
        proxy = filtered_proxy(listener=[{"name": "headers", "hide_banners": True,
                                          "request": {"add": {"X-Via-Filter": "1"}}}])
        got, sent = request(proxy, answer=BANNERED)
        self.assertIn(b"X-Via-Filter: 1\r\n", sent)
        for name in (b"Server", b"X-Powered-By", b"X-AspNet-Version"):
            self.assertIsNone(field(got, name), name)
        self.assertTrue(got.endswith(b"hello"))

    def test_proxy_answers_have_no_server(self):
        """
        The proxy's own answers name neither itself nor a backend in a
        C{Server} field.
        """
        proxy = filtered_proxy(listener=[{"name": "headers", "hide_banners": True}])
        peer = proxy.connect_client()
        peer.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.refuse_backend()
        got = peer.received()
        self.assertIn(b" 502 ", got.split(b"\r\n")[0])
        self.assertIsNone(field(got, b"Server"))
        self.assertNotIn(b"8001", got)


BACKEND = (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),)
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def _proxy(listener=(), route=(), cache=None, **settings) -> MemoryProxy:
    """
    A memory proxy whose one route serves the host C{a}.
    """
    return MemoryProxy(ProxyConfig(
        listeners=(Listener("main", "tcp:8080", filters=filters(*listener)),),
        upstreams={"app": UpstreamGroup("app", BACKEND)},
        routes=(Route("app", hosts=("a",), filters=filters(*route), cache=cache),),
        cache=Cache(), **settings))


class BannerPlacesTests(SynchronousTestCase):
    """
    Banners are hidden on every path a response takes.
    """

    def test_cache_hit(self):
        """
        A response served from the cache has no banner either: the hit
        passes through the listener's response filters.
        """
        proxy = _proxy(listener=[{"name": "headers", "hide_banners": True}],
                       cache=RouteCache(default_ttl=60))
        answers = []
        for _ in range(2):
            peer = proxy.connect_client()
            peer.send(GET)
            if proxy.backend_attempts():
                backend = proxy.accept_backend()
                backend.send(BANNERED)
            answers.append(peer.received())
        self.assertEqual(len(proxy.reactor.tcpClients), 1)
        self.assertIn(b"hit", field(answers[1], b"Cache-Status"))
        for got in answers:
            self.assertTrue(got.endswith(b"hello"), got)
            for name in (b"Server", b"X-Powered-By", b"X-AspNet-Version"):
                self.assertIsNone(field(got, name), (name, got))

    def test_protocol_switch(self):
        """
        A backend's 101 (a WebSocket handshake) passes the response
        filters too: no banner, and the tunnel works.
        """
        proxy = _proxy(listener=[{"name": "headers", "hide_banners": True}])
        peer = proxy.connect_client()
        peer.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 101 Switching Protocols\r\nServer: Jetty/9.4\r\n"
                     b"X-Powered-By: Servlet\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\nfrom backend")
        got = peer.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 101 "), got)
        self.assertIsNone(field(got, b"Server"))
        self.assertIsNone(field(got, b"X-Powered-By"))
        self.assertEqual(field(got, b"Upgrade"), b"websocket")
        self.assertTrue(got.endswith(b"\r\n\r\nfrom backend"), got)
        backend.received()
        peer.send(b"from client")
        self.assertEqual(backend.received(), b"from client")

    def test_interim_response(self):
        """
        An interim response (103 Early Hints) loses the backend's banners
        too, and keeps its other fields; the fields the filter sets are for
        the final response only.
        """
        proxy = _proxy(listener=[{"name": "headers", "hide_banners": True,
                                  "response": {"set": {"X-Frame-Options": "DENY"}}}])
        peer = proxy.connect_client()
        peer.send(GET)
        proxy.accept_backend().send(
            b"HTTP/1.1 103 Early Hints\r\nServer: nginx/1.2\r\nLink: </a.css>\r\n\r\n"
            + BANNERED)
        interim, final = peer.received().split(b"\r\n\r\n", 1)
        self.assertTrue(interim.startswith(b"HTTP/1.1 103 "), interim)
        self.assertIsNone(field(interim + b"\r\n\r\n", b"Server"))
        self.assertIsNone(field(interim + b"\r\n\r\n", b"X-Frame-Options"))
        self.assertEqual(field(interim + b"\r\n\r\n", b"Link"), b"</a.css>")
        self.assertIsNone(field(final, b"Server"))
        self.assertEqual(field(final, b"X-Frame-Options"), b"DENY")

    def test_http2(self):
        """
        A response on an HTTP/2 stream has no banner.
        """
        proxy = _proxy(listener=[{"name": "headers", "hide_banners": True}])
        client = H2Client(proxy)
        sid = client.request(_request(authority=b"a"))
        proxy.accept_backend().send(BANNERED)
        client.pump()
        self.assertEqual(client.status(sid), b"200")
        headers = client.headers(sid)
        for name in (b"server", b"x-powered-by", b"x-aspnet-version"):
            self.assertNotIn(name, headers)
        self.assertEqual(client.body(sid), b"hello")


class ProxyAnswerTests(SynchronousTestCase):
    """
    The answers the proxy gives by itself, with no headers filter: none
    has a C{Server} field (the proxy's or a backend's) or names a backend.
    """

    def assertClean(self, got: bytes, status: int) -> None:
        self.assertTrue(got.startswith(b"HTTP/1.1 %d " % status), got)
        self.assertIsNone(field(got, b"Server"), got)
        self.assertNotIn(b"127.0.0.1", got)
        self.assertNotIn(b"8001", got)
        self.assertNotIn(b"Apache", got)

    def answer(self, head: bytes, backend=None, **settings) -> bytes:
        """
        What the client gets for C{head}; C{backend(proxy)} plays the
        backend's part, if any.
        """
        proxy = _proxy(route=[{"name": "block", "paths": ["^/blocked"]}], **settings)
        peer = proxy.connect_client()
        peer.send(head)
        if backend is not None:
            backend(proxy)
        return peer.received()

    def test_request_answers(self):
        """
        No route (404), a filter's refusal (403), a malformed request
        (400), a long target (414), too many fields (431) and a body too
        large (413).
        """
        limits = Limits(max_uri_length=100, max_header_count=5, max_body_size=10)
        many = b"".join(b"X-%d: y\r\n" % i for i in range(10))
        for head, status in [
            (b"GET / HTTP/1.1\r\nHost: other\r\n\r\n", 404),
            (b"GET /blocked HTTP/1.1\r\nHost: a\r\n\r\n", 403),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Field: x\r\n\r\n", 400),
            (b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n" % (b"x" * 200), 414),
            (b"GET / HTTP/1.1\r\nHost: a\r\n%s\r\n" % many, 431),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", 413),
        ]:
            self.assertClean(self.answer(head, limits=limits), status)

    def test_backend_failures(self):
        """
        A refused connection (502), a backend whose response (with a
        banner) is malformed (502), a backend too slow (504), and no room
        for more requests (503).
        """
        self.assertClean(self.answer(GET, lambda p: p.refuse_backend()), 502)
        self.assertClean(self.answer(GET, lambda p: p.accept_backend().send(
            b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.1\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\n")), 502)

        def slow(proxy):
            proxy.accept_backend()
            proxy.reactor.advance(6)

        self.assertClean(self.answer(GET, slow, timeouts=Timeouts(upstream_response=5)), 504)

        proxy = _proxy(limits=Limits(max_in_flight=1))
        proxy.connect_client().send(GET)
        peer = proxy.connect_client()
        peer.send(GET)
        self.assertClean(peer.received(), 503)

    def test_http2(self):
        """
        The same over HTTP/2: no route (404), a refused backend
        connection (502).
        """
        proxy = _proxy()
        client = H2Client(proxy)
        lost = client.request(_request(authority=b"other"))
        refused = client.request(_request(authority=b"a"))
        proxy.refuse_backend()
        client.pump()
        for sid, status in [(lost, b"404"), (refused, b"502")]:
            self.assertEqual(client.status(sid), status)
            headers = client.headers(sid)
            self.assertNotIn(b"server", headers)
            shown = b"".join(headers.values()) + client.body(sid)
            self.assertNotIn(b"127.0.0.1", shown)
            self.assertNotIn(b"8001", shown)
