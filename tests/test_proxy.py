"""
Tests for the HTTP/1.1 proxy core (downstream codec, forwarder, upstream
codec and pool), byte by byte on in-memory transports and a fake clock.
"""

from __future__ import annotations

import zlib

from twisted.internet.error import TimeoutError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.config import (
    Forwarding,
    HeaderRules,
    Limits,
    Listener,
    ProxyConfig,
    Route,
    Server,
    Timeouts,
    UpstreamGroup,
)
from twistproxy.http.parser import DECODED_PIECE, ChunkedDecoder
from twistproxy.interfaces import IResponseSink
from twistproxy.testing import MemoryProxy

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def _server(port: int, weight: int = 1) -> Server:
    return Server(f"http://127.0.0.1:{port}", "http", "127.0.0.1", port, weight)


def _config(**kw) -> ProxyConfig:
    base = dict(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup("app", (_server(8001),))},
        routes=(Route("app"),),
    )
    base.update(kw)
    return ProxyConfig(**base)


def _head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def _fields(data: bytes) -> list:
    return [line.split(b": ", 1) for line in _head(data).split(b"\r\n")[1:]]


class ForwardingTests(SynchronousTestCase):
    """
    A request goes to a backend and its response comes back.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config())
        self.client = self.proxy.connect_client()

    def exchange(self, request=GET, response=OK):
        self.client.send(request)
        backend = self.proxy.accept_backend()
        sent = backend.received()
        backend.send(response)
        return backend, sent, self.client.received()

    def test_simple_get(self):
        """
        A GET is forwarded with its target, and the response is returned
        with its body.
        """
        backend, sent, got = self.exchange()
        self.assertTrue(sent.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\n"))
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(got.endswith(b"\r\n\r\nhello"))
        self.assertEqual(self.proxy.backend_attempts(), [])
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.body_bytes, x.backend.name), (200, 5, "127.0.0.1:8001"))

    def test_large_body_with_its_head(self):
        """
        A large body that arrives in one read with its head (sent with it
        by one sendmsg on a TCP transport) reaches the client whole, after
        its head, and so does the next response.
        """
        body = bytes(range(256)) * 256
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + body
        backend, _, got = self.exchange(response=response)
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(got.endswith(b"\r\n\r\n" + body))
        self.client.send(GET)
        backend.send(OK)
        self.assertTrue(self.client.received().endswith(b"\r\n\r\nhello"))

    def test_keep_alive_reuses_backend_connection(self):
        """
        Two requests in a row from two clients use one pooled backend
        connection.
        """
        backend, _, _ = self.exchange()
        other = self.proxy.connect_client()
        other.send(GET)
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.assertTrue(backend.received().startswith(b"GET /a?b=1 HTTP/1.1"))
        backend.send(OK)
        self.assertTrue(other.received().endswith(b"hello"))

    def test_pipelining_keeps_order(self):
        """
        Pipelined requests are answered in order, one at a time.
        """
        self.client.send(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        backend = self.proxy.accept_backend()
        self.assertIn(b"GET /1 ", backend.received())
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        self.assertIn(b"GET /2 ", backend.received())
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        got = self.client.received()
        self.assertLess(got.index(b"one"), got.index(b"two"))
        self.assertEqual(len(self.proxy.exchanges), 2)

    def test_hop_by_hop_removed(self):
        """
        Hop-by-hop fields and every field named in Connection are removed
        both ways; repeated end-to-end fields keep their order.
        """
        backend, sent, got = self.exchange(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n"
            b"X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n"
            b"Accept: a\r\nAccept: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: y\r\n"
            b"Keep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 0\r\n\r\n",
        )
        names = [n.lower() for n, _ in _fields(sent)]
        for gone in (b"connection", b"x-secret", b"keep-alive", b"te", b"proxy-authorization"):
            self.assertNotIn(gone, names)
        self.assertEqual([f for f in _fields(sent) if f[0] == b"Accept"],
                         [[b"Accept", b"a"], [b"Accept", b"b"]])
        names = [n.lower() for n, _ in _fields(got)]
        self.assertNotIn(b"x-internal", names)
        self.assertNotIn(b"keep-alive", names)
        self.assertEqual([f for f in _fields(got) if f[0] == b"Set-Cookie"],
                         [[b"Set-Cookie", b"a=1"], [b"Set-Cookie", b"b=2"]])

    def test_forwarding_fields_replaced_for_untrusted_client(self):
        """
        X-Forwarded-* and Forwarded from an untrusted client are replaced by
        the proxy's own, and Via is added.
        """
        _, sent, _ = self.exchange(
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 6.6.6.6\r\n"
            b"Forwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        fields = dict((n, v) for n, v in _fields(sent))
        self.assertEqual(fields[b"X-Forwarded-For"], b"192.0.2.7")
        self.assertEqual(fields[b"X-Forwarded-Proto"], b"http")
        self.assertEqual(fields[b"X-Forwarded-Host"], b"example.com")
        self.assertEqual(fields[b"Forwarded"], b"for=192.0.2.7;host=example.com;proto=http")
        self.assertEqual(fields[b"Via"], b"1.1 twistproxy")

    def test_forwarding_fields_extended_for_trusted_proxy(self):
        """
        From a trusted proxy, X-Forwarded-For and Forwarded are extended.
        """
        self.proxy = MemoryProxy(_config(forwarding=Forwarding(trusted_proxies=("192.0.2.0/24",))))
        self.client = self.proxy.connect_client()
        _, sent, _ = self.exchange(
            b"GET / HTTP/1.1\r\nHost: a:8080\r\nX-Forwarded-For: 198.51.100.1\r\n"
            b"Forwarded: for=198.51.100.1\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        fields = dict((n, v) for n, v in _fields(sent))
        self.assertEqual(fields[b"X-Forwarded-For"], b"198.51.100.1, 192.0.2.7")
        self.assertEqual(fields[b"X-Forwarded-Proto"], b"https")
        self.assertEqual(
            fields[b"Forwarded"],
            b'for=198.51.100.1, for=192.0.2.7;host="a:8080";proto=http',
        )

    def test_ipv6_client_in_forwarded(self):
        """
        An IPv6 client address is bracketed and quoted in Forwarded.
        """
        self.client = self.proxy.connect_client("2001:db8::1")
        _, sent, _ = self.exchange()
        fields = dict((n, v) for n, v in _fields(sent))
        self.assertEqual(fields[b"Forwarded"], b'for="[2001:db8::1]";host=example.com;proto=http')

    def test_rewrite_host_and_header_rules(self):
        """
        A route can send the backend's own host and edit request and
        response fields.
        """
        self.proxy = MemoryProxy(_config(routes=(Route(
            "app", preserve_host=False,
            request_headers=HeaderRules(remove=("X-Debug",), set=(("X-Env", "prod"),)),
            response_headers=HeaderRules(add=(("X-Served-By", "edge"),), remove=("Server",)),
        ),)))
        self.client = self.proxy.connect_client()
        _, sent, got = self.exchange(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\nX-Env: dev\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: secret/1.0\r\nContent-Length: 0\r\n\r\n",
        )
        fields = _fields(sent)
        self.assertIn([b"Host", b"127.0.0.1:8001"], fields)
        self.assertNotIn(b"X-Debug", [n for n, _ in fields])
        self.assertEqual([f for f in fields if f[0] == b"X-Env"], [[b"X-Env", b"prod"]])
        self.assertIn([b"X-Served-By", b"edge"], _fields(got))
        self.assertNotIn(b"Server", [n for n, _ in _fields(got)])

    def test_chunked_response_rechunked(self):
        """
        A chunked response is decoded and re-chunked for an HTTP/1.1 client.
        """
        _, _, got = self.exchange(
            response=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
        )
        self.assertIn(b"Transfer-Encoding: chunked", got)
        self.assertTrue(got.endswith(b"\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))
        self.assertFalse(self.client.closed)

    def test_http10_client_gets_close_delimited(self):
        """
        An HTTP/1.0 client gets an unframed body for a chunked response, and
        the connection is closed to end it.
        """
        _, _, got = self.exchange(
            b"GET / HTTP/1.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        self.assertNotIn(b"chunked", got)
        self.assertTrue(got.endswith(b"\r\n\r\nabc"))
        self.assertTrue(self.client.closed)

    def test_http10_keep_alive(self):
        """
        An HTTP/1.0 client asking for keep-alive gets it, said explicitly.
        """
        _, _, got = self.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertIn(b"Connection: keep-alive\r\n", got)
        self.assertFalse(self.client.closed)

    def test_connection_close_honoured(self):
        """
        Connection: close from the client closes after the response.
        """
        _, _, got = self.exchange(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertIn(b"Connection: close\r\n", got)
        self.assertTrue(self.client.closed)
        # A TLS transport closes only once no producer is registered.
        self.assertIsNone(self.client.transport.producer)

    def test_head_response_has_no_body(self):
        """
        The response to HEAD has no body although it has a Content-Length,
        and the backend connection is reused afterwards.
        """
        backend, _, got = self.exchange(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
        )
        self.assertTrue(got.endswith(b"Content-Length: 1234\r\n\r\n"))
        self.client.send(GET)
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.assertIn(b"GET /a", backend.received())

    def test_until_close_response(self):
        """
        A response without length ends when the backend closes, is
        re-chunked to the client, and the connection is not reused.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1")
        backend.send(b"part2")
        backend.close()
        got = self.client.received()
        self.assertTrue(got.endswith(b"5\r\npart1\r\n5\r\npart2\r\n0\r\n\r\n"))
        self.client.send(GET)
        self.assertEqual(len(self.proxy.backend_attempts()), 1)

    def test_request_body_content_length(self):
        """
        A request body with Content-Length is streamed to the backend as it
        arrives.
        """
        self.client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        backend = self.proxy.accept_backend()
        sent = backend.received()
        self.assertIn(b"Content-Length: 10\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n01234"))
        self.client.send(b"56789")
        self.assertEqual(backend.received(), b"56789")
        backend.send(OK)
        self.assertTrue(self.client.received().endswith(b"hello"))

    def test_request_body_chunked(self):
        """
        A chunked request body is validated and re-chunked to the backend.
        """
        self.client.send(
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        backend = self.proxy.accept_backend()
        sent = backend.received()
        self.assertIn(b"Transfer-Encoding: chunked\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))

    def test_expect_100_continue(self):
        """
        The proxy answers Expect: 100-continue itself once a backend is
        ready, and does not pass the backend's own 100 on.
        """
        self.client.send(
            b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        self.assertEqual(self.client.received(), b"")
        backend = self.proxy.accept_backend()
        self.assertNotIn(b"Expect", backend.received())
        self.assertEqual(self.client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.client.send(b"abc")
        self.assertEqual(backend.received(), b"abc")
        backend.send(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        got = self.client.received()
        self.assertNotIn(b"100 Continue", got)
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK"))

    def test_informational_passthrough(self):
        """
        103 Early Hints from the backend reach an HTTP/1.1 client before
        the final response.
        """
        _, _, got = self.exchange(
            response=b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK
        )
        self.assertTrue(got.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"))
        self.assertTrue(got.endswith(b"hello"))

    def test_websocket_upgrade_tunnel(self):
        """
        An Upgrade request answered with 101 becomes a two-way tunnel.
        """
        backend, sent, got = self.exchange(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: a\r\n\r\nserver-frame",
        )
        self.assertIn(b"Connection: upgrade\r\nUpgrade: websocket\r\n", sent)
        self.assertIn(b"Sec-WebSocket-Key: k", sent)
        self.assertTrue(got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIn(b"Upgrade: websocket", got)
        self.assertTrue(got.endswith(b"\r\n\r\nserver-frame"))
        self.client.send(b"client-frame")
        self.assertEqual(backend.received(), b"client-frame")
        backend.send(b"more")
        self.assertEqual(self.client.received(), b"more")
        backend.close()
        self.assertTrue(self.client.closed)

    def test_unrequested_switch_is_502(self):
        """
        A 101 for a request that did not ask for an upgrade is a bad
        response.
        """
        _, _, got = self.exchange(response=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 502 Bad Gateway"))

    def test_non_idempotent_not_retried(self):
        """
        A POST whose reused connection dies before the response is not sent
        again: the client gets 502.
        """
        backend, _, _ = self.exchange()
        self.client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        backend.close()
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 502"))

    def test_stale_pooled_connection_retried(self):
        """
        A GET whose reused connection dies before any response byte is sent
        once more on a fresh connection.
        """
        backend, _, _ = self.exchange()
        self.client.send(GET)
        backend.close()
        self.assertEqual(len(self.proxy.backend_attempts()), 1)
        fresh = self.proxy.accept_backend()
        self.assertIn(b"GET /a?b=1", fresh.received())
        fresh.send(OK)
        self.assertTrue(self.client.received().endswith(b"hello"))

    def test_fresh_connection_not_retried(self):
        """
        A request on a brand-new connection that dies is not retried.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.close()
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 502"))

    def test_unread_response_not_reused(self):
        """
        A connection whose response was cut short by the client going away
        is not put back in the pool.
        """
        self.client.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        self.client.close()
        self.assertTrue(backend.closed)
        other = self.proxy.connect_client()
        other.send(GET)
        self.assertEqual(len(self.proxy.backend_attempts()), 1)
        [x] = self.proxy.exchanges
        self.assertEqual(x.status, 200)

    def test_client_abort_aborts_backend(self):
        """
        A client that goes away before the response aborts the backend
        request, logged as 499.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        self.client.close()
        self.assertTrue(backend.transport.disconnected)
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.reason), (499, "client_closed"))


class _RecordingSink:
    """
    A response sink that notes each call and passes it on, as a cache or a
    response filter would.
    """

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.calls = []

    def informational(self, x, resp):
        self.calls.append(("interim", resp.status))
        self.wrapped.informational(x, resp)

    def response_head(self, x, resp, has_body, extra=None):
        self.calls.append(("head", resp.status))
        self.wrapped.response_head(x, resp, has_body, extra)

    def response_body(self, x, data):
        self.calls.append(("body", data))
        self.wrapped.response_body(x, data)

    def flush(self):
        self.wrapped.flush()

    def response_end(self, x):
        self.calls.append(("end",))
        self.wrapped.response_end(x)

    def upstream_failed(self, x, status, reason):
        self.calls.append(("failed", status, reason))
        self.wrapped.upstream_failed(x, status, reason)


class SinkTests(SynchronousTestCase):
    """
    The response travels through the exchange's sink, so that a cache or a
    response filter can stand between the backend and the client.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config(timeouts=Timeouts(connect=2)))
        self.client = self.proxy.connect_client()
        self.sinks = []
        proceed = self.proxy.forwarder.proceed

        def wrap(x):
            x.sink = _RecordingSink(x.sink)
            self.sinks.append(x.sink)
            proceed(x)

        self.proxy.forwarder.proceed = wrap

    def test_downstream_protocols_are_sinks(self):
        """
        The HTTP/1.1 connection is the last sink of its exchanges.
        """
        self.client.send(GET)
        [sink] = self.sinks
        self.assertTrue(verifyObject(IResponseSink, sink.wrapped))

    def test_response_passes_through_sink(self):
        """
        Head, body and end reach the client through the sink.
        """
        self.client.send(GET)
        self.proxy.accept_backend().send(OK)
        self.assertEqual(self.sinks[0].calls, [("head", 200), ("body", b"hello"), ("end",)])
        self.assertTrue(self.client.received().endswith(b"hello"))

    def test_interim_passes_through_sink(self):
        """
        An interim response (103 Early Hints) reaches the client through
        the sink too, so that response filters see it.
        """
        self.client.send(GET)
        self.proxy.accept_backend().send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK)
        self.assertEqual(self.sinks[0].calls,
                         [("interim", 103), ("head", 200), ("body", b"hello"), ("end",)])
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 103 Early Hints\r\n"))

    def test_failure_passes_through_sink(self):
        """
        The proxy's own error answer for a failed backend goes through the
        sink too (so that, for example, a cache can answer stale instead).
        """
        self.client.send(GET)
        self.proxy.refuse_backend()
        self.assertEqual(self.sinks[0].calls, [("failed", 502, "upstream_connect_failed")])
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 502 "))


class FailureTests(SynchronousTestCase):
    """
    The proxy's own answers when a backend fails.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config(timeouts=Timeouts(connect=2, upstream_response=5)))
        self.client = self.proxy.connect_client()

    def assertAnswer(self, status: int, reason: str):
        got = self.client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 %d " % status), got)
        self.assertNotIn(b"127.0.0.1", got)
        self.assertNotIn(b"8001", got)
        self.assertEqual(self.proxy.exchanges[-1].reason, reason)

    def test_connect_refused_502(self):
        """
        A refused connection is a 502 that names no backend.
        """
        self.client.send(GET)
        self.proxy.refuse_backend()
        self.assertAnswer(502, "upstream_connect_failed")
        self.assertFalse(self.client.closed)

    def test_connect_timeout_504(self):
        """
        A connection attempt that times out is a 504.
        """
        self.client.send(GET)
        self.assertEqual(self.proxy.reactor.tcpClients[0][3], 2)
        self.proxy.refuse_backend(TimeoutError())
        self.assertAnswer(504, "upstream_connect_timeout")

    def test_response_timeout_504(self):
        """
        A backend that does not answer within upstream_response is a 504,
        measured on the injected clock.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        self.proxy.reactor.advance(4.9)
        self.assertEqual(self.client.received(), b"")
        self.proxy.reactor.advance(0.2)
        self.assertAnswer(504, "upstream_timeout")
        self.assertTrue(backend.transport.disconnected)

    def test_response_timeout_renewed_by_data(self):
        """
        Each read of a response still coming renews upstream_response: a
        backend that keeps sending is not cut off, one that stops is.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        self.proxy.reactor.advance(4)
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        self.proxy.reactor.advance(4)
        backend.send(b"c")
        self.proxy.reactor.advance(4.9)
        self.assertFalse(backend.transport.disconnected)
        self.proxy.reactor.advance(0.4)
        self.assertTrue(backend.transport.disconnected)
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_timeout")

    def test_garbage_response_502(self):
        """
        A response that is not HTTP is a 502.
        """
        self.client.send(GET)
        self.proxy.accept_backend().send(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertAnswer(502, "upstream_bad_status_line")

    def test_length_beside_transfer_encoding(self):
        """
        A response with both Content-Length and Transfer-Encoding is read
        as chunked, its Content-Length ignored (RFC 9112 6.3 rule 3), and
        its backend connection is closed afterwards, never reused.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        got = self.client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got)
        self.assertNotIn(b"Content-Length: 3", got)
        self.assertTrue(got.endswith(b"5\r\nhello\r\n0\r\n\r\n"))
        self.assertTrue(backend.closed)
        self.assertEqual(self.proxy.exchanges[-1].reason, "")

    def test_truncated_response_cut(self):
        """
        A backend that dies mid-body makes the proxy close the client
        connection without completing the response.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        backend.close()
        got = self.client.received()
        self.assertTrue(got.endswith(b"5\r\nhello\r\n"))
        self.assertTrue(self.client.closed)
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_truncated")

    def test_no_backend_503(self):
        """
        With every backend unavailable the answer is 503.
        """
        for b in self.proxy.forwarder.groups["app"].backends:
            b.available = False
        self.client.send(GET)
        self.assertAnswer(503, "no_backend")

    def test_no_route_404(self):
        """
        A request no route matches is a 404.
        """
        self.proxy = MemoryProxy(_config(routes=(Route("app", hosts=("a.example",)),)))
        self.client = self.proxy.connect_client()
        self.client.send(GET)
        self.assertAnswer(404, "no_route")

    def test_dot_segments_cannot_escape_a_route(self):
        """
        A path that climbs out of a route's prefix with C{..} does not
        match that route: routes see the normalised path.  The backend
        receives the target as sent.
        """
        self.proxy = MemoryProxy(_config(routes=(Route("app", path_prefix="/public/"),)))
        self.client = self.proxy.connect_client()
        self.client.send(b"GET /public/%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertAnswer(404, "no_route")
        self.client = self.proxy.connect_client()
        self.client.send(b"GET /public/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertAnswer(400, "ambiguous_path")
        self.client = self.proxy.connect_client()
        self.client.send(b"GET /public/./x/../y HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(self.proxy.accept_backend().received().startswith(
            b"GET /public/./x/../y HTTP/1.1"))

    def test_pool_limit_queues_then_503(self):
        """
        Past max_connections requests wait for a free connection, and get
        503 if none frees up within the connect timeout.
        """
        self.proxy = MemoryProxy(_config(
            upstreams={"app": UpstreamGroup("app", (_server(8001),), max_connections=1)},
            timeouts=Timeouts(connect=2),
        ))
        first = self.proxy.connect_client()
        first.send(GET)
        backend = self.proxy.accept_backend()
        second = self.proxy.connect_client()
        second.send(GET)
        self.assertEqual(self.proxy.backend_attempts(), [])
        backend.send(OK)
        self.assertIn(b"GET /a", backend.received())
        third = self.proxy.connect_client()
        third.send(GET)
        self.proxy.reactor.advance(2.1)
        self.assertTrue(third.received().startswith(b"HTTP/1.1 503"))


class TimeoutTests(SynchronousTestCase):
    """
    Timeouts on the client side, on the injected clock.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config(
            timeouts=Timeouts(idle=30, request_head=10, request_body=20, upstream_idle=15)
        ))
        self.client = self.proxy.connect_client()

    def test_idle_keep_alive_closed(self):
        """
        A keep-alive connection with no next request is closed quietly
        after the idle timeout.
        """
        self.client.send(GET)
        self.proxy.accept_backend().send(OK)
        self.client.received()
        self.proxy.reactor.advance(29)
        self.assertFalse(self.client.closed)
        self.proxy.reactor.advance(2)
        self.assertTrue(self.client.closed)
        self.assertEqual(self.client.received(), b"")

    def test_slow_head_408(self):
        """
        A request head not complete within request_head gets 408.
        """
        self.client.send(b"GET / HTTP/1.1\r\nHost")
        self.proxy.reactor.advance(11)
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 408"))
        self.assertTrue(self.client.closed)

    def test_silent_connection_closed(self):
        """
        A connection that never sends anything is closed after request_head.
        """
        self.proxy.reactor.advance(11)
        self.assertTrue(self.client.closed)
        self.assertEqual(self.client.received(), b"")

    def test_slow_body_408(self):
        """
        A request body that stalls for request_body gets 408, and the
        backend request is aborted.
        """
        self.client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n123")
        backend = self.proxy.accept_backend()
        self.proxy.reactor.advance(15)
        self.client.send(b"4")
        self.proxy.reactor.advance(15)
        self.assertFalse(self.client.closed)
        self.proxy.reactor.advance(6)
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 408"))
        self.assertTrue(backend.transport.disconnected)

    def test_backend_talking_while_idle_is_dropped(self):
        """
        Bytes from a backend on an idle pooled connection close it, and the
        next request opens a new connection rather than read them as its
        response.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(OK)
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        self.assertTrue(backend.closed)
        backend.close()
        self.client.send(GET)
        self.assertEqual(len(self.proxy.backend_attempts()), 1)

    def test_idle_backend_connection_closed(self):
        """
        A pooled connection unused for upstream_idle is closed.
        """
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(OK)
        self.proxy.reactor.advance(16)
        self.assertTrue(backend.closed)


class LimitTests(SynchronousTestCase):
    """
    Size limits on requests.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config(
            limits=Limits(max_head_size=2048, max_header_count=10, max_body_size=100)
        ))
        self.client = self.proxy.connect_client()

    def assertRejected(self, status: int):
        got = self.client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 %d " % status), got)
        self.assertTrue(self.client.closed)
        self.assertEqual(self.proxy.backend_attempts(), [])

    def test_long_request_line_414(self):
        """
        A request line longer than the head limit gets 414.
        """
        self.client.send(b"GET /" + b"a" * 3000)
        self.assertRejected(414)

    def test_large_head_431(self):
        """
        A head larger than the limit gets 431.
        """
        self.client.send(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 3000)
        self.assertRejected(431)

    def test_too_many_fields_431(self):
        """
        More header fields than max_header_count gets 431.
        """
        self.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 10 + b"\r\n")
        self.assertRejected(431)

    def test_declared_body_too_large_413(self):
        """
        A Content-Length above max_body_size gets 413 before anything is
        forwarded.
        """
        self.client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
        self.assertRejected(413)

    def test_chunked_body_too_large_413(self):
        """
        A chunked body that grows past max_body_size gets 413 and the
        backend request is aborted.
        """
        self.client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        backend = self.proxy.accept_backend()
        self.client.send(b"64\r\n" + b"a" * 100 + b"\r\n1\r\na\r\n")
        self.assertTrue(self.client.received().startswith(b"HTTP/1.1 413"))
        self.assertTrue(backend.transport.disconnected)


class SmugglingTests(SynchronousTestCase):
    """
    Ambiguous requests are rejected and nothing of them is forwarded.
    """

    def assertRejected(self, request: bytes, status: int = 400):
        proxy = MemoryProxy(_config())
        client = proxy.connect_client()
        client.send(request)
        got = client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 %d " % status), (request, got))
        self.assertTrue(client.closed)
        self.assertEqual(proxy.backend_attempts(), [])

    def test_cl_and_te(self):
        """
        Content-Length with Transfer-Encoding (CL.TE / TE.CL).
        """
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
        )

    def test_differing_content_lengths(self):
        """
        Two different Content-Length values.
        """
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
        )

    def test_te_obfuscation(self):
        """
        Obfuscated Transfer-Encoding values and whitespace before the colon.
        """
        for te in (b"Transfer-Encoding: xchunked", b"Transfer-Encoding : chunked",
                   b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding:\x0bchunked"):
            self.assertRejected(b"POST / HTTP/1.1\r\nHost: a\r\n" + te + b"\r\n\r\n0\r\n\r\n")

    def test_bad_chunk_size(self):
        """
        An invalid chunk size after the head is forwarded is a 400 and the
        backend request is aborted.
        """
        proxy = MemoryProxy(_config())
        client = proxy.connect_client()
        client.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        backend = proxy.accept_backend()
        client.send(b"0x5\r\nhello\r\n0\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400"))
        self.assertTrue(backend.transport.disconnected)
        self.assertNotIn(b"hello", backend.received())

    def test_bare_cr_and_lf(self):
        """
        Bare CR or LF in the head.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n")
        self.assertRejected(b"GET / HTTP/1.1\nHost: a\r\n\r\n")

    def test_bare_lf_head_rejected_at_once(self):
        """
        A head whose lines end in bare LF is rejected as soon as it is
        seen, not left waiting for a CRLF CRLF that will never come.
        """
        self.assertRejected(b"GET / HTTP/1.1\nHost: x\n\n")

    def test_nul_and_obs_fold(self):
        """
        NUL in a value, and obsolete line folding.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n")
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")

    def test_host_rules(self):
        """
        A missing or repeated Host in HTTP/1.1.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\n\r\n")
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_version(self):
        """
        HTTP/2.0 in an HTTP/1 request line gets 505.
        """
        self.assertRejected(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)


class ListenerOptionTests(SynchronousTestCase):
    """
    Per-listener behaviour: https redirects, HSTS, TLS client identity.
    """

    def proxy(self, **options):
        proxy = MemoryProxy(_config())
        for name, value in options.items():
            setattr(proxy.factory, name, value)
        return proxy

    def test_redirect_to_https(self):
        """
        A redirecting listener answers 308 to the same host and target over
        https, on the configured port, without forwarding.
        """
        proxy = self.proxy(redirect_port=8443)
        client = proxy.connect_client()
        client.send(b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        got = client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n"), got)
        self.assertIn(b"Location: https://example.com:8443/a/b?c=d\r\n", got)
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertFalse(client.closed)
        proxy.factory.redirect_port = 443
        client.send(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
        self.assertIn(b"Location: https://[::1]/\r\n", client.received())
        self.assertEqual(proxy.exchanges[-1].reason, "https_redirect")

    def test_redirect_listener_options_asterisk(self):
        """
        C{OPTIONS *} on a redirecting listener is about the server, not a
        resource, so it is answered 200 there without a C{Location} (there
        is no URL to redirect to); the connection stays open for the next
        request, which is redirected as usual.
        """
        proxy = self.proxy(redirect_port=8443)
        client = proxy.connect_client()
        client.send(b"OPTIONS * HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
                    b"OPTIONS /a HTTP/1.1\r\nHost: example.com\r\n\r\n")
        first, second = client.received().split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.startswith(b"200 OK\r\n"), first)
        self.assertNotIn(b"Location", first)
        self.assertIn(b"Location: https://example.com:8443/a\r\n", second)
        self.assertEqual([x.reason for x in proxy.exchanges], ["options_asterisk", "https_redirect"])
        self.assertEqual(proxy.backend_attempts(), [])

    def test_hsts(self):
        """
        With hsts set, responses carry Strict-Transport-Security.
        """
        from twistproxy.http.listener import HTTPServerFactory, ServerSettings

        proxy = MemoryProxy(_config())
        proxy.factory.hsts = HTTPServerFactory(None, None, ServerSettings(hsts=300)).hsts
        client = proxy.connect_client()
        client.send(GET)
        proxy.accept_backend().send(OK)
        self.assertIn(b"Strict-Transport-Security: max-age=300\r\n", client.received())

    def test_client_identity_header(self):
        """
        The verified client subject is passed in the identity header, and
        whatever the client sent under that name is dropped; without a
        client certificate the header is only dropped.
        """
        for subject, expected in (("CN=alice,O=Example", [b"CN=alice,O=Example"]), (None, [])):
            proxy = self.proxy(identity_header=b"X-Client-Subject",
                               peer_identity=lambda transport: subject)
            client = proxy.connect_client()
            client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Client-Subject: CN=mallory\r\n\r\n")
            sent = proxy.accept_backend().received()
            values = [v for n, v in _fields(sent) if n == b"X-Client-Subject"]
            self.assertEqual(values, expected)


class EdgeStrictnessTests(SynchronousTestCase):
    """
    Requests that nginx refuses and a backend may handle badly are refused
    (issue 19): encoded traversal, TRACE, an empty Host.
    """

    def exchange(self, request: bytes, **config):
        proxy = MemoryProxy(_config(**config))
        client = proxy.connect_client()
        client.send(request)
        return proxy, client

    def test_encoded_traversal_400(self):
        """
        A path that climbs above the root once C{%2F} is read as C{/} is
        400 C{path_traversal}, and no backend is asked.
        """
        proxy, client = self.exchange(b"GET /a/..%2f..%2fetc HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual(proxy.exchanges[-1].reason, "path_traversal")
        self.assertEqual(proxy.backend_attempts(), [])

    def test_escaped_slashes_settings(self):
        """
        By default C{%2F} is forwarded as sent; C{decode} forwards the
        normalised path; C{reject} answers 400 C{escaped_slash}.
        """
        request = b"GET /api/group%2fproject/./x HTTP/1.1\r\nHost: a\r\n\r\n"
        for setting, line in (("keep", b"GET /api/group%2fproject/./x HTTP/1.1"),
                              ("decode", b"GET /api/group/project/x HTTP/1.1")):
            proxy, _ = self.exchange(
                request, listeners=(Listener("main", "tcp:8080", escaped_slashes=setting),))
            self.assertTrue(proxy.accept_backend().received().startswith(line), setting)
        proxy, client = self.exchange(
            request, listeners=(Listener("main", "tcp:8080", escaped_slashes="reject"),))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual(proxy.exchanges[-1].reason, "escaped_slash")

    def test_routes_match_normalized_path(self):
        """
        Routes match the normalised path: C{/%2fadmin} and
        C{/public/%2e%2e/admin} take the route of C{/admin/}.
        """
        routes = (Route("app", path_prefix="/admin"),)
        for target in (b"/%2fadmin/x", b"/public/%2e%2e/admin/x", b"/%61dmin"):
            proxy, client = self.exchange(
                b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target, routes=routes)
            self.assertTrue(proxy.accept_backend().received().startswith(b"GET " + target))

    def test_trace_refused(self):
        """
        TRACE is answered 405 C{trace_refused} without reaching a backend,
        and the connection stays open.
        """
        proxy, client = self.exchange(b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n")
        got = client.received()
        self.assertTrue(got.startswith(b"HTTP/1.1 405 "), got)
        self.assertEqual(proxy.exchanges[-1].reason, "trace_refused")
        self.assertEqual(proxy.backend_attempts(), [])
        self.assertFalse(client.closed)

    def test_trace_allowed_per_route(self):
        """
        A route with C{allow_trace} forwards TRACE; the others still
        refuse it.
        """
        routes = (Route("app", path_prefix="/debug/", allow_trace=True), Route("app"))
        proxy, client = self.exchange(
            b"TRACE /debug/x HTTP/1.1\r\nHost: a\r\n\r\nTRACE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            routes=routes)
        backend = proxy.accept_backend()
        self.assertTrue(backend.received().startswith(b"TRACE /debug/x HTTP/1.1"))
        backend.send(OK)
        self.assertIn(b"HTTP/1.1 405 ", client.received())
        self.assertEqual(proxy.exchanges[-1].reason, "trace_refused")

    def test_empty_host_400(self):
        """
        An empty Host with an origin-form target is 400 C{empty_host}: no
        backend address is invented for it.
        """
        proxy, client = self.exchange(b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
                                      routes=(Route("app", preserve_host=True),))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual(proxy.exchanges[-1].reason, "empty_host")
        self.assertEqual(proxy.backend_attempts(), [])


def _gzip(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def _chunks(data: bytes, size: int = 100) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


class CodedResponseTests(SynchronousTestCase):
    """
    A response with a transfer coding other than C{chunked}, or with a
    Transfer-Encoding RFC 9112 calls faulty framing, is decoded and passed
    on as its content, never with its Transfer-Encoding.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config())
        self.client = self.proxy.connect_client()

    def respond(self, head: bytes, body: bytes, close: bool = False):
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(head + b"\r\n\r\n" + body)
        if close:
            backend.close()
        return backend, self.client.received()

    def assertContent(self, got: bytes, content: bytes) -> None:
        head, body = got.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertNotIn(b"gzip", head.lower())
        self.assertNotIn(b"deflate", head.lower())
        self.assertEqual(_unchunk(body), content)

    def test_gzip_chunked(self):
        """
        C{gzip, chunked} is de-chunked and un-gzipped, sent to the client
        chunked, and the backend connection is reused.
        """
        content = b"x" * 5000 + b"end"
        backend, got = self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
                                    _chunks(_gzip(content), 7))
        self.assertContent(got, content)
        self.assertFalse(backend.closed)
        self.client.send(GET)
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.assertIn(b"GET /a", backend.received())

    def test_deflate_chunked_http10_client(self):
        """
        C{deflate, chunked} to an HTTP/1.0 client: the content, close
        delimited, without Transfer-Encoding.
        """
        self.client.send(b"GET / HTTP/1.0\r\n\r\n")
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: deflate, chunked\r\n\r\n"
                     + _chunks(zlib.compress(b"hello deflate")))
        got = self.client.received()
        self.assertNotIn(b"Transfer-Encoding", got)
        self.assertTrue(got.endswith(b"\r\n\r\nhello deflate"))
        self.assertTrue(self.client.closed)

    def test_gzip_until_close(self):
        """
        C{gzip} as the last coding: the body runs until the backend closes
        (RFC 9112 6.3 rule 4) and is decoded.
        """
        content = b"close delimited " * 300
        _, got = self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
                              _gzip(content), close=True)
        self.assertContent(got, content)
        self.assertEqual(self.proxy.exchanges[-1].reason, "")
        self.assertFalse(self.client.closed)

    def test_gzip_until_close_truncated(self):
        """
        A close-delimited gzip body that stops before its gzip stream ends
        is C{upstream_truncated}: the client connection is cut.
        """
        coded = _gzip(b"y" * 1000)
        self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", coded[:-3], close=True)
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_truncated")
        self.assertTrue(self.client.closed)

    def test_http10_chunked(self):
        """
        An HTTP/1.0 response with C{Transfer-Encoding: chunked} is faulty
        framing (RFC 9112 6.1): it is read as chunked and its connection
        closed afterwards, even if it asked for keep-alive.
        """
        backend, got = self.respond(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked",
            b"5\r\nhello\r\n0\r\n\r\n")
        self.assertTrue(got.endswith(b"5\r\nhello\r\n0\r\n\r\n"))
        self.assertTrue(backend.closed)
        self.assertFalse(self.client.closed)

    def test_bad_coding(self):
        """
        A chunked body that is not what its coding says is cut with
        C{upstream_bad_coding}; a coding that is not understood is 502
        C{upstream_bad_transfer_encoding}.
        """
        self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
                     _chunks(b"not gzip at all"))
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_bad_coding")
        self.assertTrue(self.client.closed)
        client = self.client = self.proxy.connect_client()
        _, got = self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: foo", b"foo")
        self.assertTrue(got.startswith(b"HTTP/1.1 502 "), got)
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_bad_transfer_encoding")
        self.assertFalse(client.closed)

    def test_unfinished_coding_at_last_chunk(self):
        """
        A chunked body whose coded stream has not ended at the last chunk
        is C{upstream_bad_coding}.
        """
        coded = _gzip(b"z" * 1000)
        self.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
                     _chunks(coded[:-3]))
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_bad_coding")

    def test_decoding_waits_for_a_slow_client(self):
        """
        A body that expands a thousandfold is decoded no faster than the
        client reads: while the client's buffer is full, nothing more is
        decoded; each time it drains, one piece more.
        """
        content_size = 4 * 1024 * 1024
        transport = self.client.transport
        write = transport.write

        def write_and_fill(data):
            write(data)
            transport.producer.pauseProducing()

        transport.write = write_and_fill
        self.client.send(GET)
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                     + _chunks(_gzip(b"\0" * content_size), 1000))
        got = [self.client.received()]
        for _ in range(2 * content_size // DECODED_PIECE):
            self.assertLess(len(got[-1]), DECODED_PIECE + 1000)
            if got[-1].endswith(b"0\r\n\r\n"):
                break
            transport.producer.resumeProducing()
            got.append(self.client.received())
        self.assertGreater(len(got), content_size // DECODED_PIECE)
        self.assertEqual(len(_unchunk(b"".join(got).split(b"\r\n\r\n", 1)[1])), content_size)


def _unchunk(body: bytes) -> bytes:
    decoder = ChunkedDecoder()
    pieces, rest = decoder.feed(body)
    assert rest == b"", rest
    return b"".join(pieces)
