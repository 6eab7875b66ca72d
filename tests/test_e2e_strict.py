# -*- test-case-name: tests.test_e2e_strict -*-
"""
End-to-end tests of strictness at the edge (issue 19): the installed proxy
under twistd, sent over loopback the unusual requests that nginx refuses
and that many backends handle badly: an encoded path traversal, TRACE, an
empty Host, and malformed HTTP/2 requests (with the C{h2} library as the
client, over h2c with prior knowledge).

Each test counts what the client and the origin see.  Clients are blocking
sockets in threads with timeouts; each proxy is stopped by its PID in
cleanup.
"""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes
from twisted.internet import defer

from tests.e2e_support import HOST, RawClient
from tests.test_e2e_abuse import _AbuseTestCase

# Streams a malformed-request flood opens; the proxy tolerates
# twistproxy.http.h2.MAX_MALFORMED of them.
FLOOD = 15


def _get(target: bytes, host: bytes = b"strict.test", method: bytes = b"GET") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (method, target, host)


def _statuses(port: int, requests) -> list:
    """
    In a thread: send C{requests} one after the other on one keep-alive
    connection (as long as the proxy keeps it open).

    @return: The status of each response read.
    """
    client = RawClient(port, timeout=10)
    statuses = []
    try:
        for request in requests:
            client.send(request)
            resp = client.read_response()
            statuses.append(resp.status)
            if resp.headers.get(b"connection") == b"close":
                break
    finally:
        client.close()
    return statuses


def _fields(path: bytes, method: bytes = b"GET", extra=()) -> list:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"strict.test"),
            (b":path", path)] + list(extra)


class _H2Client:
    """
    A blocking h2c client (prior knowledge) that may send what h2 itself
    would refuse to.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False))
        self.conn.initiate_connection()
        self.status = {}
        self.reset = {}
        self.ended = set()
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, fields, body: bytes = None, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, fields, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def finished(self, sid: int) -> bool:
        return sid in self.ended or sid in self.reset

    def read_until(self, done) -> None:
        """
        Read and handle frames until C{done()} or the connection ends.
        """
        while not done() and not self.closed:
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, socket.timeout):
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.conn.receive_data(data):
                sid = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.ResponseReceived):
                    self.status[sid] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(sid)
                elif isinstance(event, h2.events.StreamReset):
                    self.reset[sid] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.goaway = event.error_code
            try:
                self.flush()
            except OSError:
                self.closed = True

    def close(self) -> None:
        self.sock.close()


def _h2_malformed_beside_upload(port: int):
    """
    In a thread: start an upload on stream 1, send malformed requests on
    other streams while it is under way, finish it, then send one more
    GET.

    @return: (the client, the upload's stream, the malformed ones, the
        last GET's stream).
    """
    client = _H2Client(port)
    try:
        upload = client.request(_fields(b"/upload", b"POST", [(b"content-length", b"10")]),
                                b"01234", end=False)
        bad = [
            client.request(_fields(b"/x", extra=[(b"X-Upper-Case", b"1")])),
            client.request(_fields(b"/x", extra=[(b"connection", b"keep-alive")])),
            client.request(_fields(b"/x") + [(b":path", b"/again")]),
            client.request(_fields(b"/y", b"POST", [(b"content-length", b"2")]), b"toolong"),
        ]
        client.read_until(lambda: all(client.finished(s) for s in bad))
        client.conn.send_data(upload, b"56789", end_stream=True)
        client.flush()
        client.read_until(lambda: client.finished(upload))
        last = client.request(_fields(b"/after"))
        client.read_until(lambda: client.finished(last))
        return client, upload, bad, last
    finally:
        client.close()


def _h2_flood(port: int):
    """
    In a thread: send L{FLOOD} malformed requests and nothing else.

    @return: The client, once the proxy closed the connection (or it
        answered all of them).
    """
    client = _H2Client(port)
    try:
        sids = []
        for _ in range(FLOOD):
            try:
                sids.append(client.request(_fields(b"/x", extra=[(b"X-Bad", b"1")])))
            except OSError:
                client.closed = True
                break
        client.read_until(lambda: all(client.finished(s) for s in sids))
        return client
    finally:
        client.close()


class StrictnessTests(_AbuseTestCase):
    """
    The proxy refuses, as nginx does, what it used to forward.
    """

    timeout = 60

    @defer.inlineCallbacks
    def start(self, listener: str = ""):
        self.origin = self.ok_origin()
        self.proxy = yield self.start_config(self.origin.port, "", listener)
        return self.proxy

    @defer.inlineCallbacks
    def test_encoded_traversal(self):
        """
        A request target whose normalised path climbs above the root
        (C{/a/..%2f..%2fetc}) is answered 400 and never reaches the origin;
        an encoded slash elsewhere is forwarded as sent (the default,
        C{escaped_slashes = "keep"}).
        """
        proxy = yield self.start()
        for target in (b"/a/..%2f..%2fetc", b"/a/..%5c..%5cwindows", b"/a/%2E%2e/%2e%2E/etc"):
            statuses = yield self.in_thread(_statuses, proxy.port, [_get(target)])
            self.assertEqual(statuses, [400], target)
        statuses = yield self.in_thread(_statuses, proxy.port, [
            _get(b"/api/projects/group%2Fproject"), _get(b"/public/../b"),
        ])
        self.assertEqual(statuses, [200, 200])
        self.assertEqual([r.target for r in self.origin.requests],
                         [b"/api/projects/group%2Fproject", b"/public/../b"])

    @defer.inlineCallbacks
    def test_escaped_slashes_reject_and_decode(self):
        """
        C{escaped_slashes = "reject"} answers 400 to any encoded slash or
        backslash; C{"decode"} forwards the normalised path.
        """
        proxy = yield self.start('escaped_slashes = "reject"\n')
        statuses = yield self.in_thread(_statuses, proxy.port, [_get(b"/a%2fb")])
        self.assertEqual(statuses, [400])
        yield proxy.stop()
        proxy = yield self.start('escaped_slashes = "decode"\n')
        statuses = yield self.in_thread(_statuses, proxy.port, [_get(b"/a%2fb/./%63")])
        self.assertEqual(statuses, [200])
        self.assertEqual([r.target for r in self.origin.requests], [b"/a/b/c"])

    @defer.inlineCallbacks
    def test_trace_refused(self):
        """
        TRACE is answered 405 without reaching the origin, and the
        connection stays open for the next request.
        """
        proxy = yield self.start()
        statuses = yield self.in_thread(_statuses, proxy.port, [
            _get(b"/", method=b"TRACE"), _get(b"/after"),
        ])
        self.assertEqual(statuses, [405, 200])
        self.assertEqual([r.method for r in self.origin.requests], [b"GET"])

    @defer.inlineCallbacks
    def test_empty_host(self):
        """
        An HTTP/1.1 request with an empty Host and an origin-form target
        is answered 400: no backend address is invented for it.
        """
        proxy = yield self.start()
        statuses = yield self.in_thread(_statuses, proxy.port, [_get(b"/", host=b"")])
        self.assertEqual(statuses, [400])
        self.assertEqual(self.origin.requests, [])

    @defer.inlineCallbacks
    def test_h2_malformed_request_is_stream_error(self):
        """
        Malformed HTTP/2 requests are each answered 400 (or reset with
        PROTOCOL_ERROR) on their own stream; the connection lives on: an
        upload under way on another stream completes, and a later request
        is served.
        """
        proxy = yield self.start("h2c = true\n")
        client, upload, bad, last = yield self.in_thread(_h2_malformed_beside_upload, proxy.port)
        for sid in bad:
            self.assertTrue(client.status.get(sid) == 400
                            or client.reset.get(sid) == ErrorCodes.PROTOCOL_ERROR,
                            (sid, client.status, client.reset))
        self.assertEqual((client.status.get(upload), client.status.get(last)), (200, 200))
        self.assertIsNone(client.goaway)
        self.assertEqual([r.target for r in self.origin.requests], [b"/upload", b"/after"])

    @defer.inlineCallbacks
    def test_h2_malformed_flood(self):
        """
        A peer that keeps sending malformed requests is sent GOAWAY
        (ENHANCE_YOUR_CALM) and the connection is closed.
        """
        proxy = yield self.start("h2c = true\n")
        client = yield self.in_thread(_h2_flood, proxy.port)
        self.assertEqual(client.goaway, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(client.closed)
        self.assertEqual(self.origin.requests, [])
