"""
Tests for the HTTP/2 downstream codec, L{twistproxy.http.h2}: an C{h2}
client connection talks to an L{H2ServerProtocol} over an in-memory
transport, and the proxy's backends answer in HTTP/1.1 through
L{MemoryProxy}.
"""

from __future__ import annotations

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hpack import (
    Decoder,
    Encoder,
    HPACKDecodingError,
    InvalidTableSizeError,
    NeverIndexedHeaderTuple,
    OversizedHeaderListError,
)
from hyperframe.frame import Frame, HeadersFrame, RstStreamFrame
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.acme.challenges import Challenges
from twistproxy.config import (
    HeaderRules,
    Limits,
    Listener,
    ProxyConfig,
    Route,
    Server,
    UpstreamGroup,
)
from twistproxy.http.h2 import (
    PREFACE, H2ServerProtocol, _Connection, _Decoder, _Encoder, _plain, _request_head,
)
from twistproxy.http.parser import (
    ParseError, check_body_size, parse_request_head, parse_response_head,
)
from twistproxy.interfaces import IResponseSink
from twistproxy.testing import MemoryProxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: yes\r\n\r\nhello"


def _config(**kw) -> ProxyConfig:
    base = dict(
        listeners=(Listener("main", "tcp:8080"),),
        upstreams={"app": UpstreamGroup(
            "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),),
        )},
        routes=(Route("app"),),
    )
    base.update(kw)
    return ProxyConfig(**base)


def _head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def _frames(data: bytes) -> list:
    """
    The frames in C{data}, as the proxy wrote them.
    """
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


def _request(method=b"GET", path=b"/a?b=1", authority=b"example.com", extra=()):
    return [
        (b":method", method), (b":scheme", b"https"),
        (b":authority", authority), (b":path", path),
    ] + list(extra)


class H2Client:
    """
    An C{h2} client connection wired to an L{H2ServerProtocol}: what the
    client sends is delivered at once, and L{pump} reads the proxy's
    answer into events per stream.
    """

    def __init__(self, proxy: MemoryProxy, window: int = 65535):
        self.proxy = proxy
        self.protocol = H2ServerProtocol(proxy.factory)
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000), lenient=True,
        )
        self.protocol.makeConnection(self.transport)
        self.conn = H2Connection(config=H2Configuration(
            client_side=True, header_encoding=None,
        ))
        self.conn.initiate_connection()
        if window != 65535:
            self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.events = []
        self.send()

    def send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.protocol.dataReceived(data)
        self.pump()

    def pump(self) -> list:
        data = self.transport.value()
        self.transport.clear()
        new = self.conn.receive_data(data) if data else []
        self.events += new
        out = self.conn.data_to_send()
        if out:
            self.protocol.dataReceived(out)
            return new + self.pump()
        return new

    def request(self, fields, body=None, end=True) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, fields, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.send()
        return sid

    def of(self, sid: int, kind=None) -> list:
        return [
            e for e in self.events
            if getattr(e, "stream_id", None) == sid and (kind is None or type(e) is kind)
        ]

    def status(self, sid: int) -> bytes:
        [resp] = self.of(sid, ResponseReceived)
        return dict(resp.headers)[b":status"]

    def headers(self, sid: int) -> dict:
        [resp] = self.of(sid, ResponseReceived)
        return dict(resp.headers)

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(sid, DataReceived))

    def ended(self, sid: int) -> bool:
        return bool(self.of(sid, StreamEnded))


class H2Tests(SynchronousTestCase):
    """
    Requests on HTTP/2 streams go to HTTP/1.1 backends and back.
    """

    def setUp(self):
        self.proxy = MemoryProxy(_config())
        self.client = H2Client(self.proxy)

    def test_preface(self):
        """
        The preface constant is the one HTTP/2 clients send first.
        """
        self.assertEqual(PREFACE, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

    def test_settings(self):
        """
        The proxy advertises at most 100 concurrent streams.
        """
        self.assertEqual(self.client.conn.remote_settings.max_concurrent_streams, 100)

    def test_via_says_http2(self):
        """
        The request a backend gets says in Via that the client spoke HTTP/2
        (C{2 twistproxy}, RFC 9110 7.6.3), and the exchange is logged as
        HTTP/2; the response's Via names the HTTP/1.1 it was received in.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        lines = _head(backend.received()).split(b"\r\n")
        self.assertEqual(lines[0], b"GET /a?b=1 HTTP/1.1")
        self.assertIn(b"Via: 2 twistproxy", lines)
        backend.send(OK)
        self.client.pump()
        self.assertEqual(self.client.headers(sid)[b"via"], b"1.1 twistproxy")
        self.assertEqual(self.proxy.exchanges[-1].request.version, (2, 0))

    def test_get(self):
        """
        A GET goes to the backend as an HTTP/1.1 head, with Host from
        C{:authority}, the path as target, and the forwarding fields; the
        response comes back on its stream with its status, fields
        (hop-by-hop ones removed, names lower-cased, Via added) and body.
        """
        sid = self.client.request(_request(extra=[
            (b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2"),
        ]))
        backend = self.proxy.accept_backend()
        sent = backend.received()
        lines = _head(sent).split(b"\r\n")
        self.assertEqual(lines[0], b"GET /a?b=1 HTTP/1.1")
        self.assertIn(b"Host: example.com", lines)
        self.assertIn(b"X-Forwarded-Proto: http", lines)
        self.assertIn(b"X-Forwarded-Host: example.com", lines)
        self.assertIn(b"X-Forwarded-For: 192.0.2.7", lines)
        self.assertIn(b"cookie: a=1; b=2", lines)
        self.assertIn(b"accept: */*", lines)
        self.assertFalse(any(line.startswith(b":") for line in lines))
        self.assertNotIn(b"Transfer-Encoding", sent)
        backend.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: X-Int\r\n"
            b"X-Int: no\r\nKeep-Alive: 5\r\nX-App: yes\r\n\r\nhello"
        )
        self.client.pump()
        fields = self.client.headers(sid)
        self.assertEqual(fields[b":status"], b"200")
        self.assertEqual(fields[b"x-app"], b"yes")
        self.assertEqual(fields[b"content-length"], b"5")
        self.assertEqual(fields[b"via"], b"1.1 twistproxy")
        self.assertNotIn(b"x-int", fields)
        self.assertNotIn(b"keep-alive", fields)
        self.assertNotIn(b"connection", fields)
        self.assertEqual(self.client.body(sid), b"hello")
        self.assertTrue(self.client.ended(sid))
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.body_bytes, x.method, x.path), (200, 5, "GET", "/a?b=1"))

    def test_same_request_again(self):
        """
        A request with the same fields as the last one is checked once
        (L{H2ServerProtocol._request_head}) but each gets its own head:
        equal, with its own list of fields.  The same fields are checked
        again when the stream's end differs or the listener's limits
        changed; what the listener's C{escaped_slashes} says applies to
        each.
        """
        fields = _request(path=b"/a%2Fb", extra=[(b"content-length", b"2")])
        sid = self.client.request(fields, body=b"hi")
        self.client.request(fields, body=b"hi")
        first, second = [self.client.protocol._streams[sid + n].exchange.request
                         for n in (0, 2)]
        self.assertIsNot(first, second)
        self.assertIsNot(first.headers, second.headers)
        self.assertEqual(
            [(r.method, r.target, r.path, r.host, r.headers, r.content_length, r.chunked)
             for r in (first, second)],
            [(b"GET", b"/a%2Fb", b"/a/b", b"example.com",
              [(b"content-length", b"2")], 2, False)] * 2,
        )
        first.headers.append((b"x-added", b"1"))
        self.assertEqual(second.headers, [(b"content-length", b"2")])

        refused = self.client.request(fields)
        self.assertEqual(self.client.status(refused), b"400")
        self.assertEqual(self.proxy.exchanges[-1].reason, "bad_content_length")

        factory = self.client.protocol._factory
        factory.escaped_slashes = "decode"
        decoded = self.client.request(fields, body=b"hi")
        self.assertEqual(self.client.protocol._streams[decoded].exchange.request.target, b"/a/b")
        factory.escaped_slashes = "reject"
        refused = self.client.request(fields, body=b"hi")
        self.assertEqual(self.client.status(refused), b"400")
        factory.escaped_slashes = "keep"
        factory.limits = Limits(max_header_count=0)
        refused = self.client.request(fields, body=b"hi")
        self.assertEqual(self.client.status(refused), b"431")

    def test_plain_response_fields_again(self):
        """
        Response fields equal to the last plain ones are sent as they are,
        and fields that are not plain are still left to h2, however often
        they come.
        """
        resp = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0")
        for extra in ([(b"x-a", b"1")], [(b"x-a", b"1")], [(b"Connection", b"close")],
                      [(b"Connection", b"close")], [(b"x-a", b"1")]):
            sid = self.client.request(_request())
            stream = self.client.protocol._streams[sid]
            stream.response_head(stream.exchange, resp, False, extra)
            self.client.pump()
            fields = self.client.headers(sid)
            self.assertNotIn(b"connection", fields)
            self.assertEqual(fields.get(b"x-a"), extra[0][1] if extra[0][0] == b"x-a" else None)
            self.assertTrue(self.client.ended(sid))

    def test_acme_challenge(self):
        """
        An ACME CA fetching an HTTP-01 answer over HTTP/2 is answered by
        the proxy itself with the key authorization, as over HTTP/1.1: no
        backend is asked.  Other paths are routed as usual.
        """
        self.proxy.factory.challenges = challenges = Challenges()
        challenges.add(b"tok", b"tok.thumb")
        sid = self.client.request(_request(path=b"/.well-known/acme-challenge/tok"))
        self.assertEqual(self.client.status(sid), b"200")
        self.assertEqual(self.client.body(sid), b"tok.thumb")
        self.assertTrue(self.client.ended(sid))
        self.assertEqual(self.proxy.backend_attempts(), [])
        self.client.request(_request(path=b"/.well-known/acme-challenge/other"))
        self.assertEqual(len(self.proxy.backend_attempts()), 1)

    def test_host_not_preserved(self):
        """
        With a route that does not preserve Host, the backend gets its own
        host, and C{:authority} in X-Forwarded-Host.
        """
        proxy = MemoryProxy(_config(routes=(Route("app", preserve_host=False),)))
        client = H2Client(proxy)
        client.request(_request(authority=b"www.example.org"))
        sent = proxy.accept_backend().received()
        self.assertIn(b"\r\nHost: 127.0.0.1:8001\r\n", sent)
        self.assertIn(b"\r\nX-Forwarded-Host: www.example.org\r\n", sent)

    def test_path_as_for_http11(self):
        """
        The path is checked and normalised as for HTTP/1.1: the backend
        receives it as sent, and one that climbs above the root is 400.
        """
        self.client.request(_request(path=b"/public/../admin//x?q"))
        sent = self.proxy.accept_backend().received()
        self.assertTrue(sent.startswith(b"GET /public/../admin//x?q HTTP/1.1\r\n"))
        sid = self.client.request(_request(path=b"/a/..%2f..%2fetc"))
        self.assertEqual(self.client.status(sid), b"400")

    def test_post_without_length_is_chunked(self):
        """
        A body without content-length goes to the backend chunked, each
        DATA frame one chunk, and ends with the last chunk at END_STREAM.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"abc", end=False)
        backend = self.proxy.accept_backend()
        sent = backend.received()
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\n3\r\nabc\r\n"))
        self.client.conn.send_data(sid, b"de", end_stream=True)
        self.client.send()
        self.assertEqual(backend.received(), b"2\r\nde\r\n0\r\n\r\n")
        backend.send(OK)
        self.client.pump()
        self.assertEqual(self.client.status(sid), b"200")
        self.assertTrue(self.client.ended(sid))

    def test_post_with_length(self):
        """
        A body with content-length is sent as is, with that Content-Length.
        """
        self.client.request(
            _request(method=b"POST", extra=[(b"content-length", b"5")]), body=b"hello",
        )
        sent = self.proxy.accept_backend().received()
        self.assertIn(b"\r\nContent-Length: 5\r\n", sent)
        self.assertNotIn(b"chunked", sent)
        self.assertTrue(sent.endswith(b"\r\n\r\nhello"))

    def test_body_buffered_until_attached(self):
        """
        Body bytes that arrive before the backend connection is open are
        not acknowledged (the client's window shrinks) and are sent once it
        is.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"x" * 1000, end=False)
        self.assertEqual(self.client.conn.local_flow_control_window(sid), 65535 - 1000)
        backend = self.proxy.accept_backend()
        self.assertTrue(backend.received().endswith(b"3e8\r\n" + b"x" * 1000 + b"\r\n"))

    def test_stream_is_response_sink(self):
        """
        Each HTTP/2 stream is the last response sink of its exchange.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"a", end=False)
        self.assertTrue(verifyObject(IResponseSink, self.client.protocol._streams[sid]))

    def test_upstream_full_stops_acknowledging(self):
        """
        While the backend connection is full, DATA is held and not
        acknowledged; it is sent once the backend drains.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"a", end=False)
        backend = self.proxy.accept_backend()
        backend.received()
        stream = self.client.protocol._streams[sid]
        stream.upstream_full(True)
        for _ in range(3):
            self.client.conn.send_data(sid, b"b" * 13000)
        self.client.conn.send_data(sid, b"b" * 1000, end_stream=True)
        self.client.send()
        self.assertEqual(backend.received(), b"")
        window = self.client.protocol._h2._get_stream_by_id(sid).inbound_flow_control_window
        self.assertLess(window, 65535 - 40000 + 1)
        stream.upstream_full(False)
        self.client.pump()
        got = backend.received()
        self.assertTrue(got.startswith(b"32c8\r\n" + b"b" * 13000))
        self.assertTrue(got.endswith(b"\r\n0\r\n\r\n"))

    def test_concurrent_streams(self):
        """
        Two streams go to two backend connections; their responses, sent in
        the other order and interleaved, each arrive on their own stream.
        """
        s1 = self.client.request(_request(path=b"/one"))
        s2 = self.client.request(_request(path=b"/two"))
        b1 = self.proxy.accept_backend()
        b2 = self.proxy.accept_backend()
        self.assertIn(b"GET /one ", b1.received())
        self.assertIn(b"GET /two ", b2.received())
        b2.send(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ntw")
        b1.send(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\none")
        b2.send(b"o-two")
        self.client.pump()
        self.assertEqual(self.client.status(s1), b"201")
        self.assertEqual(self.client.status(s2), b"200")
        self.assertEqual(self.client.body(s1), b"one")
        self.assertEqual(self.client.body(s2), b"two-two")
        self.assertTrue(self.client.ended(s1) and self.client.ended(s2))
        self.assertEqual(len(self.proxy.exchanges), 2)

    def test_large_response_flow_control(self):
        """
        A response larger than the client's window is sent as the window
        allows; past the stream buffer the backend is paused, and resumed
        once WINDOW_UPDATEs have drained it.
        """
        proxy = MemoryProxy(_config())
        client = H2Client(proxy, window=1000)
        sid = client.request(_request())
        backend = proxy.accept_backend()
        backend.received()
        size = 200000
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        backend.send(b"x" * 100000)
        client.pump()
        self.assertEqual(len(client.body(sid)), 1000)
        self.assertEqual(backend.transport.producerState, "paused")
        got = 1000
        rounds = 0
        resumed_at = None
        while not client.ended(sid):
            rounds += 1
            self.assertLess(rounds, 1000)
            # The client reads what it got, which reopens its window.
            client.conn.increment_flow_control_window(1000, sid)
            client.conn.increment_flow_control_window(1000)
            client.send()
            new = len(client.body(sid)) - got
            got += new
            if backend.transport.producerState == "producing" and got < size:
                if resumed_at is None:
                    resumed_at = got
                backend.send(b"y" * 100000)
                client.pump()
        # Resumed once no more than the stream buffer waited, before the
        # buffer was drained.
        self.assertTrue(100000 - 65536 <= resumed_at < 100000, resumed_at)
        body = client.body(sid)
        self.assertEqual(len(body), size)
        self.assertEqual(body, b"x" * 100000 + b"y" * 100000)

    def test_response_larger_than_a_frame(self):
        """
        A response read in one piece larger than the largest frame, which
        the windows would let through whole, is sent in frames of that
        size at most.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.received()
        size = 40000
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        self.client.pump()
        self.assertEqual(self.client.body(sid), b"x" * size)
        self.assertTrue(self.client.ended(sid))
        frames = self.client.of(sid, DataReceived)
        self.assertEqual([len(f.data) for f in frames], [16384, 16384, size - 2 * 16384])

    def test_upstream_failure(self):
        """
        A backend that fails before answering leads to a 502 on the stream,
        a short plain-text answer.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.received()
        backend.close()
        self.client.pump()
        self.assertEqual(self.client.status(sid), b"502")
        self.assertEqual(self.client.headers(sid)[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(self.client.body(sid), b"502 Bad Gateway\n")
        self.assertTrue(self.client.ended(sid))
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.reason), (502, "upstream_closed"))

    def test_upstream_failure_after_head(self):
        """
        A backend that fails mid-response gets the stream reset, so the
        client sees an incomplete response; the connection stays usable.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.received()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        backend.close()
        self.client.pump()
        self.assertEqual(self.client.status(sid), b"200")
        [reset] = self.client.of(sid, StreamReset)
        self.assertEqual(reset.error_code, ErrorCodes.INTERNAL_ERROR)
        self.assertFalse(self.client.ended(sid))
        self.assertFalse(self.client.transport.disconnecting)

    def test_trailers_on_reset_stream(self):
        """
        Trailers the client sent before it saw the proxy reset its stream
        are a stream error, as h2 has it: answered with RST_STREAM
        (STREAM_CLOSED), and the connection stays usable.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"a", end=False)
        backend = self.proxy.accept_backend()
        backend.received()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        backend.close()
        self.client.pump()
        self.assertTrue(self.client.of(sid, StreamReset))
        late = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"])
        late.data = self.client.conn.encoder.encode([(b"x-t", b"1")])
        self.client.protocol.dataReceived(late.serialize())
        frames = _frames(self.client.transport.value())
        self.client.transport.clear()
        self.assertEqual(
            [(type(f), f.stream_id, f.error_code) for f in frames if type(f) is RstStreamFrame],
            [(RstStreamFrame, sid, ErrorCodes.STREAM_CLOSED)],
        )
        self.assertFalse(self.client.transport.disconnecting)
        again = self.client.request(_request())
        self.proxy.accept_backend().send(OK)
        self.client.pump()
        self.assertEqual(self.client.status(again), b"200")

    def test_no_route(self):
        """
        Errors of the forwarder (404 without a route) are answered on the
        stream.
        """
        proxy = MemoryProxy(_config(routes=(Route("app", hosts=("other.example",)),)))
        client = H2Client(proxy)
        sid = client.request(_request())
        self.assertEqual(client.status(sid), b"404")

    def test_client_reset(self):
        """
        A stream reset by the client aborts its backend connection, and the
        exchange ends as 499.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.received()
        self.client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.client.send()
        self.assertTrue(backend.transport.disconnecting)
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.reason), (499, "client_closed"))
        self.assertFalse(self.client.transport.disconnecting)

    def test_connection_lost(self):
        """
        When the client connection is lost, every open stream's backend
        connection is aborted and each exchange ends.
        """
        self.client.request(_request(path=b"/1"))
        self.client.request(_request(path=b"/2"))
        b1 = self.proxy.accept_backend()
        b2 = self.proxy.accept_backend()
        b1.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.client.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(b1.transport.disconnecting)
        self.assertTrue(b2.transport.disconnecting)
        statuses = sorted(x.status for x in self.proxy.exchanges)
        self.assertEqual(statuses, [200, 499])
        self.assertEqual(self.client.protocol._streams, {})

    def test_connect_refused(self):
        """
        CONNECT is answered 501.
        """
        sid = self.client.conn.get_next_available_stream_id()
        # Older h2 releases (the newest on Python 3.9) wrongly insist on a
        # :path for CONNECT when sending; our server must still see one
        # without.
        self.client.conn.config.validate_outbound_headers = False
        self.client.conn.send_headers(
            sid, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
        )
        self.client.send()
        self.assertEqual(self.proxy.backend_attempts(), [])
        import h2

        if tuple(int(p) for p in h2.__version__.split(".")[:2]) >= (4, 3):
            self.assertEqual(self.client.status(sid), b"501")
        else:
            # h2 < 4.3 refuses a CONNECT without :path itself, for the whole
            # connection, before our codec sees it.
            self.assertTrue(any(type(e) is ConnectionTerminated for e in self.client.events))

    def test_body_too_large(self):
        """
        A declared length over the limit is answered 413 before anything
        goes to a backend; so is a body that grows over it.
        """
        proxy = MemoryProxy(_config(limits=Limits(max_body_size=10)))
        client = H2Client(proxy)
        sid = client.request(
            _request(method=b"POST", extra=[(b"content-length", b"11")]),
            body=b"x" * 11,
        )
        self.assertEqual(client.status(sid), b"413")
        sid = client.request(_request(method=b"POST"), body=b"x" * 8, end=False)
        backend = proxy.accept_backend()
        client.conn.send_data(sid, b"x" * 8)
        client.send()
        self.assertEqual(client.status(sid), b"413")
        self.assertTrue(backend.transport.disconnecting)
        self.assertEqual(proxy.backend_attempts(), [])

    def test_too_many_headers(self):
        """
        More fields than C{max_header_count} are answered 431.
        """
        proxy = MemoryProxy(_config(limits=Limits(max_header_count=3)))
        client = H2Client(proxy)
        sid = client.request(_request(extra=[(b"x-%d" % i, b"v") for i in range(4)]))
        self.assertEqual(client.status(sid), b"431")

    def test_bad_header_value(self):
        """
        A field value the HTTP/1.1 head could not carry (a NUL, a CR) makes
        the request malformed: its stream is answered 400, nothing reaches
        a backend, and the connection stays open (issue 19, item 4).
        """
        for value in (b"a\x00b", b"a\rb"):
            proxy = MemoryProxy(_config())
            client = H2Client(proxy)
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, _request(extra=[(b"x-a", value)]), end_stream=True)
            client.send()
            self.assertEqual(client.status(sid), b"400")
            self.assertEqual(proxy.exchanges[-1].reason, "bad_header")
            self.assertFalse([e for e in client.events if type(e) is ConnectionTerminated])
            self.assertFalse(client.transport.disconnecting)
            self.assertEqual(proxy.backend_attempts(), [])

    def malformed(self, client, sid, fields, body=None):
        """
        Send a request h2 itself would refuse to send.
        """
        client.conn.config.validate_outbound_headers = False
        client.conn.config.normalize_outbound_headers = False
        client.conn.send_headers(sid, fields, end_stream=body is None)
        if body is not None:
            client.conn.send_data(sid, body, end_stream=True)
        client.send()

    def test_malformed_request_is_stream_error(self):
        """
        Malformed requests (RFC 9113 8.1.1: an upper-case field name, a
        connection-specific field, a repeated pseudo-header, a
        content-length that is not a number) are each answered 400 on
        their stream, while a request on another stream of the same
        connection is served.
        """
        proxy = MemoryProxy(_config())
        client = H2Client(proxy)
        good = client.request(_request(), end=False)
        backend = proxy.accept_backend()
        for extra, reason in (([(b"X-Upper", b"1")], "bad_header"),
                              ([(b"connection", b"keep-alive")], "connection_header"),
                              ([(b"te", b"gzip")], "connection_header"),
                              ([(b"content-length", b"x")], "malformed_request")):
            sid = client.conn.get_next_available_stream_id()
            self.malformed(client, sid, _request(method=b"POST", extra=extra), b"x")
            self.assertEqual(client.status(sid), b"400", extra)
            self.assertEqual(proxy.exchanges[-1].reason, reason)
        sid = client.conn.get_next_available_stream_id()
        self.malformed(client, sid, _request() + [(b":path", b"/again")])
        self.assertEqual(client.status(sid), b"400")
        client.conn.end_stream(good)
        client.send()
        backend.send(OK)
        client.pump()
        self.assertEqual(client.status(good), b"200")
        self.assertFalse([e for e in client.events if type(e) is ConnectionTerminated])
        self.assertEqual(proxy.backend_attempts(), [])

    def test_body_longer_than_content_length(self):
        """
        DATA beyond the declared content-length makes the request
        malformed: the stream is answered 400 (or reset with
        PROTOCOL_ERROR once the response has started), the backend
        connection is dropped, and the client connection goes on.
        """
        proxy = MemoryProxy(_config())
        client = H2Client(proxy)
        sid = client.request(_request(method=b"POST", extra=[(b"content-length", b"3")]),
                             body=b"ab", end=False)
        backend = proxy.accept_backend()
        client.conn.config.validate_outbound_headers = False
        client.conn.send_data(sid, b"cd", end_stream=True)
        client.send()
        self.assertEqual(client.status(sid), b"400")
        self.assertEqual(proxy.exchanges[-1].reason, "bad_content_length")
        self.assertTrue(backend.transport.disconnecting)
        sid = client.request(_request())
        self.assertFalse([e for e in client.events if type(e) is ConnectionTerminated])
        proxy.accept_backend().send(OK)
        client.pump()
        self.assertEqual(client.status(sid), b"200")

    def test_refused_request_with_too_long_body(self):
        """
        A request refused on its head whose DATA, in the same read, also
        overruns its content-length is answered once, and the connection
        goes on.
        """
        proxy = MemoryProxy(_config())
        client = H2Client(proxy)
        sid = client.conn.get_next_available_stream_id()
        self.malformed(client, sid, _request(method=b"POST", path=b"/../x",
                                             extra=[(b"content-length", b"2")]), b"toolong")
        self.assertEqual(client.status(sid), b"400")
        self.assertEqual([x.reason for x in proxy.exchanges], ["path_traversal"])
        self.assertFalse([e for e in client.events if type(e) is ConnectionTerminated])
        sid = client.request(_request())
        proxy.accept_backend().send(OK)
        client.pump()
        self.assertEqual(client.status(sid), b"200")

    def test_malformed_flood_goaway(self):
        """
        A peer that keeps sending malformed requests (more than
        MAX_MALFORMED, and more than well-formed ones) is sent GOAWAY
        ENHANCE_YOUR_CALM and cut off.
        """
        from twistproxy.http.h2 import MAX_MALFORMED

        proxy = MemoryProxy(_config())
        client = H2Client(proxy)
        for i in range(MAX_MALFORMED + 1):
            self.assertFalse(client.transport.disconnecting, i)
            sid = client.conn.get_next_available_stream_id()
            self.malformed(client, sid, _request(extra=[(b"X-Upper", b"1")]))
        [goaway] = [e for e in client.events if type(e) is ConnectionTerminated]
        self.assertEqual(goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(client.transport.disconnecting)

    def test_body_timeout(self):
        """
        A request body that stalls for C{timeouts.request_body} is answered
        408, and its backend connection dropped.
        """
        sid = self.client.request(_request(method=b"POST"), body=b"a", end=False)
        backend = self.proxy.accept_backend()
        self.proxy.reactor.advance(self.proxy.config.timeouts.request_body + 1)
        self.client.pump()
        self.assertEqual(self.client.status(sid), b"408")
        self.assertTrue(backend.transport.disconnecting)
        [x] = self.proxy.exchanges
        self.assertEqual((x.status, x.reason), (408, "request_body_timeout"))

    def test_client_full_pauses_backends(self):
        """
        While the client connection's send buffer is full, reading from
        every stream's backend is paused.
        """
        self.client.request(_request(path=b"/1"))
        backend = self.proxy.accept_backend()
        self.client.protocol._client_full(True)
        self.assertEqual(backend.transport.producerState, "paused")
        self.client.protocol._client_full(False)
        self.assertEqual(backend.transport.producerState, "producing")

    def test_idle_timeout(self):
        """
        A connection without open streams is closed with GOAWAY after the
        idle timeout; one with an open stream is not.
        """
        sid = self.client.request(_request())
        self.proxy.reactor.advance(self.proxy.config.timeouts.idle + 1)
        self.assertFalse(self.client.transport.disconnecting)
        backend = self.proxy.accept_backend()
        backend.send(OK)
        self.client.pump()
        self.assertTrue(self.client.ended(sid))
        for _ in range(int(self.proxy.config.timeouts.idle) + 2):
            self.proxy.reactor.advance(1)
        self.assertTrue(self.client.transport.disconnecting)
        self.client.pump()
        self.assertTrue(any(type(e) is ConnectionTerminated for e in self.client.events))

    def test_head_response(self):
        """
        A response without a body ends the stream with its headers and
        keeps its Content-Length.
        """
        sid = self.client.request(_request(method=b"HEAD"))
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        self.client.pump()
        self.assertEqual(self.client.headers(sid)[b"content-length"], b"42")
        self.assertTrue(self.client.ended(sid))
        self.assertEqual(self.client.body(sid), b"")

    def test_response_fields_as_for_http1(self):
        """
        Response fields are rewritten as for an HTTP/1.1 client: the
        connection fields (also those Connection names) are dropped, the
        backend's Via is kept and this proxy appended, the route's rules
        apply and HSTS is added; names are lower-cased.
        """
        from twistproxy.http.listener import HTTPServerFactory, ServerSettings

        proxy = MemoryProxy(_config(routes=(Route(
            "app", response_headers=HeaderRules(
                remove=("Server",), set=(("Cache-Control", "no-cache"),),
                add=(("X-Served-By", "edge"),),
            ),
        ),)))
        proxy.factory.hsts = HTTPServerFactory(None, None, ServerSettings(hsts=300)).hsts
        client = H2Client(proxy)
        sid = client.request(_request())
        proxy.accept_backend().send(
            b"HTTP/1.1 200 OK\r\nServer: secret\r\nConnection: x-hop\r\nX-Hop: 1\r\n"
            b"Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nVia: 1.0 a\r\nVia: 1.1 b\r\n"
            b"Cache-Control: public\r\nContent-Length: 0\r\n\r\n"
        )
        client.pump()
        [resp] = client.of(sid, ResponseReceived)
        names = [n for n, _ in resp.headers]
        fields = dict(resp.headers)
        for gone in (b"server", b"connection", b"x-hop", b"upgrade", b"proxy-authenticate"):
            self.assertNotIn(gone, names)
        self.assertEqual(names.count(b"via"), 1)
        self.assertEqual(fields[b"via"], b"1.0 a, 1.1 b, 1.1 twistproxy")
        self.assertEqual(names.count(b"cache-control"), 1)
        self.assertEqual(fields[b"cache-control"], b"no-cache")
        self.assertEqual(fields[b"x-served-by"], b"edge")
        self.assertEqual(fields[b"strict-transport-security"], b"max-age=300")
        self.assertEqual(fields[b"content-length"], b"0")
        self.assertTrue(client.ended(sid))

    def test_response_via_set_by_rules(self):
        """
        A route whose response rules set Via sends that Via alone, as to
        an HTTP/1.1 client: neither the backend's nor this proxy's.
        """
        proxy = MemoryProxy(_config(routes=(Route(
            "app", response_headers=HeaderRules(set=(("Via", "hidden"),)),
        ),)))
        client = H2Client(proxy)
        sid = client.request(_request())
        proxy.accept_backend().send(
            b"HTTP/1.1 200 OK\r\nVia: 1.0 a\r\nContent-Length: 0\r\n\r\n"
        )
        client.pump()
        [resp] = client.of(sid, ResponseReceived)
        self.assertEqual([v for n, v in resp.headers if n == b"via"], [b"hidden"])

    def test_refused_request_logged(self):
        """
        A request refused before it is forwarded is still an exchange, with
        the method and path it asked for and the reason it was refused.
        """
        sid = self.client.request(_request(method=b"DELETE", path=b"/up#f"))
        self.assertEqual(self.client.status(sid), b"400")
        self.assertEqual(self.client.body(sid), b"400 Bad Request\n")
        [x] = self.proxy.exchanges
        self.assertEqual((x.method, x.path, x.status, x.reason),
                         ("DELETE", "/up#f", 400, "bad_request_line"))
        self.assertEqual(self.proxy.backend_attempts(), [])

    def test_informational(self):
        """
        A 103 from the backend is passed on before the final response.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK)
        self.client.pump()
        [info] = self.client.of(sid, InformationalResponseReceived)
        self.assertEqual(dict(info.headers)[b":status"], b"103")
        self.assertEqual(dict(info.headers)[b"link"], b"</s.css>")
        self.assertNotIn(b"content-length", dict(info.headers))
        self.assertEqual(self.client.status(sid), b"200")

    def test_last_body_bytes_end_the_stream(self):
        """
        A body's bytes are sent as they arrive, and its last ones in the
        DATA frame that ends the stream, not in one of their own.
        """
        sid = self.client.request(_request())
        backend = self.proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
        self.client.pump()
        self.assertEqual(self.client.body(sid), b"hel")
        self.assertFalse(self.client.ended(sid))
        backend.send(b"lo")
        self.client.pump()
        self.assertEqual(self.client.body(sid), b"hello")
        last = self.client.of(sid, DataReceived)[-1]
        self.assertEqual((last.data, last.stream_ended is not None), (b"lo", True))

    def test_sensitive_response_fields_never_indexed(self):
        """
        A backend's Authorization and short Cookie fields are sent as h2
        sends them: never indexed in the client's HPACK table.
        """
        sid = self.client.request(_request())
        self.proxy.accept_backend().send(
            b"HTTP/1.1 200 OK\r\nAuthorization: Basic eDp5\r\nCookie: a=1\r\n"
            b"X-App: yes\r\nContent-Length: 0\r\n\r\n"
        )
        self.client.pump()
        [resp] = self.client.of(sid, ResponseReceived)
        kinds = {name: type(field) for field in resp.headers for name in field[:1]}
        self.assertIs(kinds[b"authorization"], NeverIndexedHeaderTuple)
        self.assertIs(kinds[b"cookie"], NeverIndexedHeaderTuple)
        self.assertIsNot(kinds[b"x-app"], NeverIndexedHeaderTuple)

    def test_unusual_response_fields_checked_by_h2(self):
        """
        Response fields that h2 would change or refuse (here added by a
        cache or filter) are left to h2: connection-specific ones are
        dropped, values stripped, and a TE other than C{trailers} resets
        the stream.
        """
        sid = self.client.request(_request())
        stream = self.client.protocol._streams[sid]
        resp = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0")
        stream.response_head(stream.exchange, resp, False, [
            (b"Connection", b"close"), (b"X-Padded", b" yes "), (b"x-spaced ", b"1"),
        ])
        self.client.pump()
        fields = self.client.headers(sid)
        self.assertNotIn(b"connection", fields)
        self.assertEqual(fields[b"x-padded"], b"yes")
        self.assertEqual(fields[b"x-spaced"], b"1")
        self.assertTrue(self.client.ended(sid))

        sid = self.client.request(_request())
        stream = self.client.protocol._streams[sid]
        stream.response_head(stream.exchange, resp, False, [(b"TE", b"gzip")])
        self.client.pump()
        self.assertEqual(self.client.of(sid, ResponseReceived), [])
        self.assertEqual(self.proxy.exchanges[-1].status, 200)
        self.assertNotIn(sid, self.client.protocol._streams)


class PlainTests(SynchronousTestCase):
    """
    L{_plain} tells the response fields that h2's own normalisation and
    validation would pass unchanged from those it must see.
    """

    def test_plain(self):
        """
        C{:status} first, then lower-case tokens and trimmed values.
        """
        self.assertTrue(_plain([(b":status", b"200"), (b"x-a", b"1 2"), (b"via", b"")]))

    def test_not_plain(self):
        """
        Anything h2 would change or refuse is not plain: a first field
        other than C{:status}, another pseudo-header, an empty, upper-case
        or padded name, a padded value, and the names h2 drops, refuses or
        keeps out of the HPACK table.
        """
        self.assertFalse(_plain([(b"x-a", b"1"), (b"x-b", b"2")]))
        for name, value in [
            (b":path", b"/"), (b"", b"1"), (b"X-A", b"1"), (b" x-a", b"1"),
            (b"x-a", b"1 "), (b"x-a", b"\t1"), (b"connection", b"close"),
            (b"te", b"gzip"), (b"authorization", b"a"), (b"cookie", b"a=1"),
        ]:
            self.assertFalse(_plain([(b":status", b"200"), (name, value)]), (name, value))


class ConnectionTests(SynchronousTestCase):
    """
    h2's connection, as the proxy uses it.
    """

    def test_response_headers_without_stream(self):
        """
        Response headers for a stream that h2 does not hold are h2's own
        C{send_headers}' to refuse: a server opens no stream.
        """
        conn = _Connection(H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        with self.assertRaises(ProtocolError):
            conn.send_response_headers(1, [(b":status", b"200")], False)


class CodersTests(SynchronousTestCase):
    """
    L{_Encoder} and L{_Decoder} reuse the last block (or fields) only when
    hpack's own coders would give the same: their output equals hpack's
    for the same sequence of calls.
    """

    def test_encoder(self):
        """
        The same fields again give the same block, as hpack's encoder
        would; other fields, a table resize (signalled once), a sensitive
        field not in the table, and fields given as a generator are coded
        afresh.
        """
        ours, theirs = _Encoder(), Encoder()
        a = [(b":status", b"200"), (b"server", b"nginx"), (b"x-a", b"1")]
        b = [(b":status", b"200"), (b"server", b"nginx"), (b"x-a", b"2")]
        secret = [(b":status", b"200"), NeverIndexedHeaderTuple(b"x-s", b"s")]
        # A tuple stands for its fields given as a generator.
        calls = [
            a, a, a, b, a, a, tuple(a), a, [a[0], a[1], NeverIndexedHeaderTuple(*a[2])],
            secret, secret, [(b":status", b"200"), (b"x-s", b"s")],
            8192, a, a, 64, a, a, 4096, a, a,
        ]
        for fields in calls:
            if isinstance(fields, int):
                ours.header_table_size = theirs.header_table_size = fields
                continue
            expected = theirs.encode(list(fields))
            given = fields if isinstance(fields, list) else iter(fields)
            self.assertEqual(ours.encode(given), expected, fields)
        self.assertIsNotNone(ours._last)

    def test_decoder(self):
        """
        The same block again gives the same fields, as hpack's decoder
        would, and the same error once the limits are lower; blocks that
        change the table, or its size, are decoded again, and the blocks
        after them read the table as it is then.
        """
        encoder = Encoder()
        x_a, x_b = [(b"x-a", b"1")], [(b"x-b", b"2")]
        blocks = [encoder.encode(x_a), encoder.encode(x_a), encoder.encode(x_b)]
        encoder.header_table_size = 256
        blocks.append(encoder.encode(x_b))
        first, newest, second, resized = blocks
        ours, theirs = _Decoder(), Decoder()
        for block in [first, newest, newest, second, newest, newest, resized, newest]:
            self.assertEqual(ours.decode(block, raw=True), theirs.decode(block, raw=True))
        self.assertEqual(ours.decode(newest), theirs.decode(newest))
        ours.decode(newest, raw=True).clear()
        ours.decode(newest, raw=True).clear()
        self.assertEqual(ours.decode(newest, raw=True), theirs.decode(newest, raw=True))
        ours.max_allowed_table_size = theirs.max_allowed_table_size = 128
        self.assertRaises(InvalidTableSizeError, theirs.decode, newest, True)
        self.assertRaises(InvalidTableSizeError, ours.decode, newest, True)
        ours.max_allowed_table_size = theirs.max_allowed_table_size = 4096
        ours.decode(newest, raw=True)
        ours.max_header_list_size = theirs.max_header_list_size = 30
        self.assertRaises(OversizedHeaderListError, theirs.decode, newest, True)
        self.assertRaises(OversizedHeaderListError, ours.decode, newest, True)
        ours.max_header_list_size = theirs.max_header_list_size = 4096
        ours.decode(newest, raw=True)
        ours.header_table_size = theirs.header_table_size = 0
        self.assertRaises(HPACKDecodingError, theirs.decode, newest, True)
        self.assertRaises(HPACKDecodingError, ours.decode, newest, True)


class RequestHeadTests(SynchronousTestCase):
    """
    L{_request_head} turns a stream's fields into a L{RequestHead} as
    strictly as the HTTP/1.1 parser reads a head.
    """

    def parse(self, fields, ended=True, limits=Limits()):
        return _request_head(fields, ended, limits)

    def assertRefused(self, fields, status, reason, ended=True, limits=Limits()):
        e = self.assertRaises(ParseError, self.parse, fields, ended, limits)
        self.assertEqual((e.status, e.reason), (status, reason))

    def test_fields(self):
        """
        Pseudo-fields become method, target, path and host; the others stay
        in order, cookie crumbs joined.  The version is HTTP/2's, C{(2, 0)}
        (for Via and the access log; backends still get HTTP/1.1).
        """
        req = self.parse(_request(extra=[
            (b"cookie", b"a=1"), (b"x-b", b"2"), (b"cookie", b"c=3"),
        ]))
        self.assertEqual(
            (req.method, req.target, req.path, req.host, req.version),
            (b"GET", b"/a?b=1", b"/a", b"example.com", (2, 0)),
        )
        self.assertEqual(req.headers, [(b"x-b", b"2"), (b"cookie", b"a=1; c=3")])
        self.assertEqual(
            (req.content_length, req.chunked, req.has_body, req.keep_alive, req.upgrade),
            (None, False, False, True, None),
        )

    def test_framing(self):
        """
        An open stream without content-length is chunked to the backend;
        with one, it keeps it.
        """
        req = self.parse(_request(method=b"POST"), ended=False)
        self.assertEqual((req.chunked, req.content_length), (True, None))
        req = self.parse(_request(method=b"POST", extra=[(b"content-length", b"3")]), ended=False)
        self.assertEqual((req.chunked, req.content_length), (False, 3))
        self.assertRefused(
            _request(extra=[(b"content-length", b"3")]), 400, "bad_content_length",
        )
        self.assertRefused(
            _request(extra=[(b"content-length", b"x")]), 400, "bad_content_length",
        )

    def test_host_fallback(self):
        """
        Without C{:authority}, Host is used; without either, 400.
        """
        fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
        self.assertEqual(self.parse(fields + [(b"host", b"h.example")]).host, b"h.example")
        self.assertRefused(fields, 400, "missing_host")
        self.assertRefused(_request(authority=b"u@h"), 400, "bad_host")

    def test_refused(self):
        """
        Missing or unknown pseudo-fields, pseudo-fields after regular ones,
        field names or values an HTTP/1.1 head could not carry, and
        targets that are not origin-form are refused with 400.
        """
        base = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")]
        self.assertRefused(base, 400, "missing_pseudo_header")
        self.assertRefused(base[1:] + [(b":path", b"/")], 400, "missing_pseudo_header")
        self.assertRefused(_request(extra=[(b":protocol", b"ws")]), 400, "bad_pseudo_header")
        self.assertRefused(
            [(b"x", b"1")] + _request(), 400, "bad_pseudo_header",
        )
        self.assertRefused(_request(extra=[(b"X-Up", b"1")]), 400, "bad_header")
        self.assertRefused(_request(extra=[(b"x y", b"1")]), 400, "bad_header")
        self.assertRefused(_request(extra=[(b"x", b" 1")]), 400, "bad_header")
        self.assertRefused(_request(extra=[(b"x", b"1\n")]), 400, "bad_header")
        # Trailing blanks, control characters and DEL: the HTTP/1.1 parser
        # would strip or refuse them, so they never reach a backend.
        for value in (b"1 ", b"1\t", b"a\x01b", b"a\x7fb"):
            self.assertRefused(_request(extra=[(b"x", value)]), 400, "bad_header")
        self.assertEqual(
            self.parse(_request(extra=[(b"x", b"a\tb c"), (b"y", b"")])).headers,
            [(b"x", b"a\tb c"), (b"y", b"")],
        )
        self.assertRefused(_request(path=b"http://a/"), 400, "bad_request_target")
        self.assertRefused(_request(path=b"/a#f"), 400, "bad_request_line")
        self.assertRefused(_request(path=b"*"), 400, "bad_request_target")
        self.assertEqual(self.parse(_request(method=b"OPTIONS", path=b"*")).target, b"*")

    def test_refused_as_h2_would(self):
        """
        What h2's own validation refused (as a connection error) is
        refused here, with 400 on the stream: a repeated pseudo-field, a
        connection-specific field, C{te} other than C{trailers}, a Host
        that differs from C{:authority}.
        """
        self.assertRefused(_request(extra=[(b":path", b"/b")]), 400, "bad_pseudo_header")
        for name, value in ((b"connection", b"close"), (b"keep-alive", b"5"),
                            (b"proxy-connection", b"x"), (b"transfer-encoding", b"chunked"),
                            (b"upgrade", b"websocket"), (b"te", b"gzip")):
            self.assertRefused(_request(extra=[(name, value)]), 400, "connection_header")
        self.assertEqual(self.parse(_request(extra=[(b"te", b"trailers")])).method, b"GET")
        self.assertRefused(_request(extra=[(b"host", b"b.example")]), 400, "bad_host")
        self.parse(_request(extra=[(b"host", b"example.com")]))

    def test_limits(self):
        """
        Too many fields: 431; a declared body over the limit: 413;
        CONNECT: 501.
        """
        self.assertRefused(
            _request(extra=[(b"x", b"1")] * 3), 431, "too_many_headers",
            limits=Limits(max_header_count=2),
        )
        self.assertRefused(
            _request(method=b"POST", extra=[(b"content-length", b"11")]), 413,
            "body_too_large", ended=False, limits=Limits(max_body_size=10),
        )
        self.assertRefused(
            [(b":method", b"CONNECT"), (b":authority", b"a:1")], 501, "connect_not_supported",
        )


class SharedChecksTests(SynchronousTestCase):
    """
    A fault that an HTTP/1.1 head and an HTTP/2 request can both have is
    refused with the same status and reason whichever version the client
    spoke, so that access logs and metrics count it once.
    """

    # (fault, HTTP/1.1 head, HTTP/2 fields, status, reason)
    CASES = [
        ("a fragment in the target", b"GET /a#f HTTP/1.1\r\nHost: a",
         _request(path=b"/a#f"), 400, "bad_request_line"),
        ("a method that is not a token", b"G(T / HTTP/1.1\r\nHost: a",
         _request(method=b"G(T", path=b"/"), 400, "bad_request_line"),
        ("CONNECT", b"CONNECT a:1 HTTP/1.1\r\nHost: a:1",
         [(b":method", b"CONNECT"), (b":authority", b"a:1")], 501, "connect_not_supported"),
        ("* without OPTIONS", b"GET * HTTP/1.1\r\nHost: a",
         _request(path=b"*"), 400, "bad_request_target"),
        ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a",
         _request(extra=[(b"host", b"a"), (b"host", b"a")]), 400, "duplicate_host"),
        ("a Host that is no host", b"GET / HTTP/1.1\r\nHost: a b",
         _request(authority=b"a b"), 400, "bad_host"),
        ("an empty Host", b"GET / HTTP/1.1\r\nHost: ",
         _request(authority=b""), 400, "empty_host"),
        ("no Host", b"GET / HTTP/1.1",
         [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")], 400, "missing_host"),
        ("a CGI-style framing field", b"GET / HTTP/1.1\r\nHost: a\r\nContent_Length: 1",
         _request(extra=[(b"content_length", b"1")]), 400, "bad_header"),
        ("an expectation other than 100-continue",
         b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok",
         _request(extra=[(b"expect", b"200-ok")]), 417, "bad_expectation"),
        ("a body over the limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11",
         _request(method=b"POST", extra=[(b"content-length", b"11")]), 413, "body_too_large"),
    ]

    def test_same_reason(self):
        """
        Each fault gets the same answer from both codecs' checks.
        """
        limits = Limits(max_body_size=10)

        def http1(head):
            check_body_size(parse_request_head(head).content_length, limits.max_body_size)

        for fault, head, fields, status, reason in self.CASES:
            e1 = self.assertRaises(ParseError, http1, head)
            e2 = self.assertRaises(ParseError, _request_head, fields, False, limits)
            self.assertEqual(
                [(e1.status, e1.reason), (e2.status, e2.reason)], [(status, reason)] * 2, fault)
