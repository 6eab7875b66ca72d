"""
Tests for TLS passthrough (L{twistproxy.stream.sni}): reading the server
name from real ClientHellos made by OpenSSL, refusing malformed ones, and
routing connections to a relay or to TLS termination.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import SNIRoute
from twistproxy.proxyproto import PP2_TYPE_AUTHORITY
from twistproxy.proxyproto import parse as parse_proxy_header
from twistproxy.stream.sni import (
    MAX_CLIENT_HELLO,
    ClientHelloError,
    SNIFactory,
    SNIRouter,
    server_name,
)

from tests.test_proxyproto import recording_factory
from tests.test_stream_tcp import RelayHarness, config


def client_hello(name: bytes = b"") -> bytes:
    """
    The first flight of an OpenSSL client (its ClientHello), asking for
    C{name} when given.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if name:
        connection.set_tlsext_host_name(name)
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def records(message: bytes, size: int) -> bytes:
    """
    C{message} split into TLS handshake records of C{size} bytes.
    """
    out = b""
    for i in range(0, len(message), size):
        chunk = message[i : i + size]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
    return out


class ServerNameTests(SynchronousTestCase):
    """
    L{server_name} on ClientHellos.
    """

    def test_real_client_hello(self):
        """
        The name an OpenSSL client asks for is read, lower-cased.
        """
        self.assertEqual(server_name(client_hello(b"DB.Example.test")), "db.example.test")

    def test_no_name(self):
        """
        A ClientHello without the server_name extension names nothing.
        """
        self.assertEqual(server_name(client_hello()), "")

    def test_incomplete(self):
        """
        Every beginning of a ClientHello asks for more bytes.
        """
        hello = client_hello(b"a.example")
        for end in range(0, len(hello), 7):
            self.assertIsNone(server_name(hello[:end]), end)

    def test_split_records(self):
        """
        A ClientHello split across several records is put together.
        """
        hello = client_hello(b"a.example")
        self.assertEqual(server_name(records(hello[5:], 100)), "a.example")

    def test_malformed(self):
        """
        Not TLS, another handshake message first, a truncated body inside a
        complete record, a bad name and a ClientHello above the size limit
        are refused.
        """
        hello = client_hello(b"a.example")
        body = hello[5:]
        bad_name = body.replace(b"a.example", b"a/example")
        too_long = b"\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
        for bad in [
            b"GET / HTTP/1.1\r\n\r\n",
            records(b"\x02" + body[1:], 16384),
            records(body[:4] + body[4:60], 16384) + b"\x15\x03\x01\x00\x01\x00",
            records(body[:1] + (len(body) - 4 - 10).to_bytes(3, "big") + body[4:-10], 16384),
            records(bad_name, 16384),
            records(too_long, 16384),
        ]:
            self.assertRaises(ClientHelloError, server_name, bad)


class RouterTests(SynchronousTestCase):
    """
    L{SNIRouter}: exact names, wildcards, the default.
    """

    def test_routes(self):
        """
        The first route whose exact name or wildcard matches wins; other
        names, and no name, go to the default.
        """
        router = SNIRouter([SNIRoute(("db.example",), "db"),
                            SNIRoute(("*.example",), "web")], default="other")
        self.assertEqual(router.group_for("db.example"), "db")
        self.assertEqual(router.group_for("a.b.example"), "web")
        self.assertEqual(router.group_for("example"), "other")
        self.assertEqual(router.group_for(""), "other")
        self.assertEqual(SNIRouter([SNIRoute(("db.example",), "db")]).group_for("x"), "")


class PassthroughTests(SynchronousTestCase):
    """
    L{SNIFactory}: relay or terminate by the name.
    """

    def setUp(self):
        self.h = RelayHarness(config())
        self.terminated = []
        self.factory = SNIFactory(SNIRouter([SNIRoute(("db.example",), "pg")]),
                                  self.h.factory, recording_factory(self.terminated), timeout=10)

    def connect(self, data: bytes):
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000),
                                    lenient=True)
        protocol.makeConnection(transport)
        for i in range(0, len(data), 50):
            protocol.dataReceived(data[i : i + 50])
        return protocol, transport

    def logged(self, protocol):
        """
        Close C{protocol}'s connection, as the reactor does after the
        proxy closed it.

        @return: What its access log line says: C{(status, reason,
            server_name, bytes received)}.
        """
        protocol.connectionLost(Failure(ConnectionDone()))
        (relay,) = self.h.ended
        del self.h.ended[:]
        return relay.status, relay.reason, relay.server_name, relay.bytes_received

    def test_passthrough(self):
        """
        A connection for a passthrough name is relayed to the route's group,
        ClientHello included, untouched; later bytes follow.
        """
        hello = client_hello(b"db.example")
        protocol, _ = self.connect(hello)
        backend = self.h.accept()
        protocol.dataReceived(b"more")
        self.assertEqual(backend.received(), hello + b"more")
        self.assertEqual(self.terminated, [])
        (relay,) = self.h.factory.connections
        self.assertEqual(relay.server_name, "db.example")

    def test_proxy_header_names_server(self):
        """
        A group configured for PROXY version 2 gets, before the untouched
        ClientHello, a header naming the client and the server name asked
        for (PP2_TYPE_AUTHORITY), without PP2_TYPE_SSL: the proxy did not
        terminate that TLS.
        """
        self.h = RelayHarness(config('proxy_protocol = "v2"'))
        self.factory.relays = self.h.factory
        hello = client_hello(b"db.example")
        self.connect(hello)
        sent = self.h.accept().received()
        header, used = parse_proxy_header(sent)
        self.assertEqual(header.source, ("192.0.2.7", 4000))
        self.assertEqual(header.tlvs, ((PP2_TYPE_AUTHORITY, b"db.example"),))
        self.assertEqual(sent[used:], hello)

    def test_tiny_records_linear(self):
        """
        A ClientHello in one-byte records, one byte per read, is relayed,
        and each record header is examined at most once per read that
        ends in it plus once when it completes (not every header again on
        every read, which would let a client make the proxy work in
        proportion to the square of the ClientHello's size).
        """
        from twistproxy.stream import sni

        examined = []

        def counted(data, offset):
            examined.append(offset)
            return record_size(data, offset)

        record_size = sni._record_size
        self.patch(sni, "_record_size", counted)
        hello = client_hello(b"db.example")
        data = records(hello[5:], 1)
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 4000))
        protocol.makeConnection(StringTransport(lenient=True))
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        self.assertEqual(self.h.accept().received(), data)
        self.assertLessEqual(len(examined), 2 * len(hello[5:]))

    def test_terminate_other_names(self):
        """
        Other names go to the terminating factory, which gets the whole
        ClientHello; nothing is relayed.
        """
        hello = client_hello(b"www.example")
        self.connect(hello)
        (inner,) = self.terminated
        self.assertEqual(inner.data, hello)
        self.assertEqual(self.h.attempts(), [])

    def test_malformed_closed(self):
        """
        A malformed ClientHello closes the connection: nothing is relayed
        or terminated, and the access log has its line (400
        C{bad_client_hello}).
        """
        protocol, transport = self.connect(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00")
        self.assertTrue(transport.disconnecting)
        self.assertEqual((self.terminated, self.h.attempts()), ([], []))
        self.assertEqual(self.logged(protocol), (400, "bad_client_hello", "", 10))

    def test_oversized_closed(self):
        """
        A ClientHello above L{MAX_CLIENT_HELLO} is closed, not forwarded:
        one that announces more, and one sent in tiny records that never
        ends within the bound; each has its access log line (400
        C{bad_client_hello}).
        """
        body = client_hello(b"db.example")[5:]
        announced = records(b"\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big") + body[4:], 16384)
        trickled = records(b"\x01" + MAX_CLIENT_HELLO.to_bytes(3, "big") + b"\x03" * 4000, 1)
        for data in (announced, trickled):
            protocol, transport = self.connect(data)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.logged(protocol)[:2], (400, "bad_client_hello"))
        self.assertEqual((self.terminated, self.h.attempts()), ([], []))

    def test_timeout(self):
        """
        A client that does not send its ClientHello in time is closed, and
        logged (408 C{client_hello_timeout}).
        """
        protocol, transport = self.connect(client_hello(b"db.example")[:20])
        self.h.reactor.advance(9)
        self.assertFalse(transport.disconnecting)
        self.h.reactor.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.logged(protocol), (408, "client_hello_timeout", "", 20))

    def test_no_default_closes(self):
        """
        On a listener that terminates nothing, a name no route has (and no
        default group) closes the connection, logged with the name (404
        C{no_route}).
        """
        self.factory.terminate = None
        hello = client_hello(b"www.example")
        protocol, transport = self.connect(hello)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.h.attempts(), [])
        self.assertEqual(self.logged(protocol), (404, "no_route", "www.example", len(hello)))
