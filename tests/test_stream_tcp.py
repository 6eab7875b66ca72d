"""
Tests for TCP proxying (L{twistproxy.stream.tcp}), byte by byte on
in-memory transports and a fake clock.
"""

from __future__ import annotations

import io
import json

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twistproxy.accesslog import AccessLogWriter
from twistproxy.config import parse
from twistproxy.build import make_group
from twistproxy.interfaces import IRequestInfo
from twistproxy.proxyproto import PP2_TYPE_AUTHORITY, PP2_TYPE_SSL
from twistproxy.proxyproto import parse as parse_proxy_header
from twistproxy.stream.tcp import StreamInfo, TCPRelayFactory


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that records a closed sending half.
    """

    write_closed = False

    def __init__(self, peer):
        super().__init__(peerAddress=peer, hostAddress=IPv4Address("TCP", "10.0.0.1", 5433),
                         lenient=True)

    def loseWriteConnection(self):
        self.write_closed = True


def config(group_options: str = "", listener_options: str = "", servers: int = 2,
           extra: str = ""):
    listed = ", ".join(f'"tcp://127.0.0.1:{5432 + i}"' for i in range(servers))
    return parse(f"""
[listeners.db]
endpoint = "tcp:5433"
protocol = "tcp"
upstream = "pg"
{listener_options}

[upstreams.pg]
servers = [{listed}]
{group_options}

[timeouts]
tcp_idle = 30
{extra}
""")


class Peer:
    """
    One end of an in-memory connection: a protocol and its transport.
    """

    def __init__(self, protocol, host: str, port: int):
        self.protocol = protocol
        self.transport = HalfCloseTransport(IPv4Address("TCP", host, port))
        protocol.makeConnection(self.transport)

    def received(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def close(self):
        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


class RelayHarness:
    """
    A TCP listener's relay factory on a memory reactor.
    """

    def __init__(self, cfg):
        self.reactor = MemoryReactorClock()
        self.config = cfg
        group = cfg.upstreams["pg"]
        self.group = make_group(self.reactor, group, cfg.timeouts)
        self.ended = []
        listener = cfg.listeners[0]
        self.factory = TCPRelayFactory(
            self.reactor, listener.name, listener.upstream, {"pg": self.group}, cfg.timeouts,
            listener.max_connections, on_end=self.ended.append)
        self._accepted = 0

    def client(self, host="192.0.2.7", port=40000):
        protocol = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        if protocol is None:
            return None
        return Peer(protocol, host, port)

    def attempts(self):
        return [(c[0], c[1]) for c in self.reactor.tcpClients[self._accepted:]]

    def accept(self) -> Peer:
        host, port, factory, timeout, _ = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        return Peer(factory.buildProtocol(IPv4Address("TCP", host, port)), host, port)

    def refuse(self, error=None):
        host, port, factory, timeout, _ = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        factory.clientConnectionFailed(None, Failure(error or ConnectionRefusedError()))


class StreamInfoTests(SynchronousTestCase):
    """
    What balancers see of a relayed connection.
    """

    def test_interface(self):
        """
        L{StreamInfo} provides L{IRequestInfo}: a client address, a host
        (the TLS server name) and no header or cookie.
        """
        info = StreamInfo("192.0.2.7", "db.example")
        verifyObject(IRequestInfo, info)
        self.assertEqual((info.client_address, info.host, info.method, info.path),
                         ("192.0.2.7", "db.example", "", ""))
        self.assertIsNone(info.header("x"))
        self.assertIsNone(info.cookie("x"))


class RelayTests(SynchronousTestCase):
    """
    Bytes go both ways between a client and a backend.
    """

    def setUp(self):
        self.h = RelayHarness(config())

    def test_relays_both_ways(self):
        """
        The client is not read until the backend is connected; then what
        one side sends, the other receives, unchanged.
        """
        client = self.h.client()
        self.assertEqual(client.transport.producerState, "paused")
        self.assertEqual(self.h.attempts(), [("127.0.0.1", 5432)])
        self.assertEqual(self.h.reactor.tcpClients[0][3], 5.0)
        backend = self.h.accept()
        self.assertEqual(client.transport.producerState, "producing")
        client.protocol.dataReceived(b"\x00\x01hello")
        self.assertEqual(backend.received(), b"\x00\x01hello")
        backend.protocol.dataReceived(b"world\xff")
        self.assertEqual(client.received(), b"world\xff")

    def test_balancer_spreads(self):
        """
        Successive connections go to the group's backends in turn (the
        round-robin balancer), and each counts as in flight on its backend
        until it ends.
        """
        first, second = self.h.client(), self.h.client()
        self.assertEqual(self.h.attempts(), [("127.0.0.1", 5432), ("127.0.0.1", 5433)])
        self.assertEqual([b.in_flight for b in self.h.group.backends], [1, 1])
        backend = self.h.accept()
        first.close()
        self.assertTrue(backend.transport.disconnecting)
        backend.close()
        self.assertEqual([b.in_flight for b in self.h.group.backends], [0, 1])
        self.assertEqual(self.h.group.in_flight, 1)
        self.assertEqual(len(self.h.ended), 1)

    def test_hashing_on_client_address(self):
        """
        With a consistent-hashing balancer keyed on the client address,
        every connection from one client goes to the same backend.
        """
        h = RelayHarness(config('balancer = "ring_hash"', servers=4))
        for _ in range(5):
            h.client(host="198.51.100.9")
        ports = {port for _, port in h.attempts()}
        self.assertEqual(len(ports), 1)

    def test_connect_retry_on_another_backend(self):
        """
        A refused connection is tried on another backend, and the refusal
        counts as a failure of the first.
        """
        client = self.h.client()
        self.h.refuse()
        self.assertEqual(self.h.attempts(), [("127.0.0.1", 5433)])
        backend = self.h.accept()
        client.protocol.dataReceived(b"x")
        self.assertEqual(backend.received(), b"x")
        self.assertEqual([b.failures for b in self.h.group.backends], [1, 0])

    def test_refused_connections_not_counted(self):
        """
        Refused connections do not count against retries: with retries = 1
        and three backends, a client whose first two backends refuse is
        relayed to the third; timeouts do count, so after two of them the
        client is closed.
        """
        h = RelayHarness(config("retries = 1", servers=3))
        client = h.client()
        h.refuse()
        h.refuse()
        [(_, port)] = h.attempts()
        backend = h.accept()
        client.protocol.dataReceived(b"x")
        self.assertEqual(backend.received(), b"x")
        other = h.client(port=40001)
        h.refuse(TimeoutError())
        h.refuse(TimeoutError())
        self.assertEqual(h.attempts(), [])
        self.assertTrue(other.transport.disconnecting)

    def test_connect_failure_closes(self):
        """
        When every attempt fails (timeouts here), the client is closed and
        the access log says why, with nginx stream's status 502.
        """
        client = self.h.client()
        self.h.refuse(TimeoutError())
        self.h.refuse(TimeoutError())
        self.assertEqual(self.h.attempts(), [])
        self.assertTrue(client.transport.disconnecting)
        client.close()
        (relay,) = self.h.ended
        self.assertEqual((relay.status, relay.reason), (502, "upstream_connect_timeout"))
        self.assertEqual(self.h.group.in_flight, 0)
        self.assertEqual([b.in_flight for b in self.h.group.backends], [0, 0])

    def test_no_backend(self):
        """
        When no backend is available the client is closed at once: 503.
        """
        for backend in self.h.group.backends:
            backend.healthy = False
            backend.refresh()
        client = self.h.client()
        self.assertEqual(self.h.attempts(), [])
        self.assertTrue(client.transport.disconnecting)
        client.close()
        (relay,) = self.h.ended
        self.assertEqual((relay.status, relay.reason), (503, "no_backend"))

    def test_client_gone_while_connecting(self):
        """
        A client that leaves while the backend connection is being made
        gets that connection closed as soon as it is made, and its backend
        released.
        """
        client = self.h.client()
        client.close()
        self.assertEqual(self.h.ended, [])
        backend = self.h.accept()
        self.assertTrue(backend.transport.disconnecting)
        backend.close()
        self.assertEqual(len(self.h.ended), 1)
        self.assertEqual(self.h.group.backends[0].in_flight, 0)

    def test_early_bytes_wait_for_backend(self):
        """
        Bytes handed to the relay before the backend is connected (by a
        protocol that read ahead) are sent first once it is.
        """
        client = self.h.client()
        client.protocol.dataReceived(b"early")
        backend = self.h.accept()
        client.protocol.dataReceived(b"-late")
        self.assertEqual(backend.received(), b"early-late")


class FlowTests(SynchronousTestCase):
    """
    Backpressure, half-close and the idle timeout.
    """

    def setUp(self):
        self.h = RelayHarness(config())
        self.client = self.h.client()
        self.backend = self.h.accept()

    def test_backpressure(self):
        """
        When either side's write buffer is full (the client's, then the
        backend's), the other side is not read until it drains.
        """
        for full, other in [(self.client, self.backend), (self.backend, self.client)]:
            full.transport.producer.pauseProducing()
            self.assertEqual(other.transport.producerState, "paused")
            full.transport.producer.resumeProducing()
            self.assertEqual(other.transport.producerState, "producing")

    def test_client_half_close(self):
        """
        A client that ends its sending half has the backend's sending half
        ended too; the backend's answer still reaches the client, and the
        relay ends when the backend ends its half.
        """
        self.client.protocol.readConnectionLost()
        self.assertTrue(self.backend.transport.write_closed)
        self.assertFalse(self.client.transport.disconnecting)
        self.backend.protocol.dataReceived(b"answer")
        self.assertEqual(self.client.received(), b"answer")
        self.backend.protocol.readConnectionLost()
        self.assertTrue(self.client.transport.write_closed)
        self.assertTrue(self.client.transport.disconnecting)
        self.assertTrue(self.backend.transport.disconnecting)

    def test_backend_half_close(self):
        """
        A backend that ends its sending half has the client's ended; the
        client can still send.
        """
        self.backend.protocol.readConnectionLost()
        self.assertTrue(self.client.transport.write_closed)
        self.assertFalse(self.client.transport.disconnecting)
        self.client.protocol.dataReceived(b"more")
        self.assertEqual(self.backend.received(), b"more")

    def test_idle_timeout(self):
        """
        No byte either way for C{timeouts.tcp_idle} seconds cuts both
        connections (an abort: a graceful close would wait for buffers
        that nobody reads); traffic postpones it.
        """
        self.h.reactor.advance(20)
        self.client.protocol.dataReceived(b"x")
        self.h.reactor.advance(20)
        self.assertFalse(self.client.transport.disconnecting)
        self.h.reactor.advance(11)
        self.assertTrue(self.client.transport.disconnected)
        self.assertTrue(self.backend.transport.disconnected)
        self.backend.close()
        self.client.close()
        (relay,) = self.h.ended
        self.assertEqual(relay.reason, "idle_timeout")

    def test_idle_timeout_non_reading_client(self):
        """
        A client that reads nothing while the backend sends (its buffer
        full, the backend no longer read) is cut with the backend at the
        idle timeout, even after the backend's connection is closed, and
        the relay ends (its log line is written) as soon as both are.
        """
        self.backend.protocol.dataReceived(b"x" * 65536)
        self.client.transport.producer.pauseProducing()
        self.h.reactor.advance(31)
        self.assertTrue(self.client.transport.disconnected)
        self.assertTrue(self.backend.transport.disconnected)
        self.assertEqual(self.h.ended, [])
        self.backend.close()
        self.client.close()
        (relay,) = self.h.ended
        self.assertEqual((relay.reason, relay.bytes_sent), ("idle_timeout", 65536))

    def test_close_after_full_buffer(self):
        """
        When one side closes or ends its sending half, the proxy's relay
        producer is taken off the other side before that side is closed
        or half-closed: once registered and paused (a full buffer), it
        would otherwise keep the transport from ever closing
        (C{FileDescriptor.doWrite} resumes it instead).
        """
        self.client.transport.producer.pauseProducing()
        self.backend.protocol.readConnectionLost()
        self.assertIsNone(self.client.transport.producer)
        self.assertTrue(self.client.transport.write_closed)
        self.backend.transport.producer.pauseProducing()
        self.client.protocol.readConnectionLost()
        self.assertIsNone(self.backend.transport.producer)
        self.assertTrue(self.client.transport.disconnecting)
        self.assertTrue(self.backend.transport.disconnecting)

    def test_client_gone_backend_full(self):
        """
        A client that closes while the backend's buffer is full has the
        backend's connection closed without the relay producer, and the
        backend a client closed by the backend's end likewise.
        """
        self.backend.transport.producer.pauseProducing()
        self.client.close()
        self.assertIsNone(self.backend.transport.producer)
        self.assertTrue(self.backend.transport.disconnecting)
        other = self.h.client(port=40001)
        backend = self.h.accept()
        other.transport.producer.pauseProducing()
        backend.close()
        self.assertIsNone(other.transport.producer)
        self.assertTrue(other.transport.disconnecting)

    def test_backend_closes(self):
        """
        A backend that closes has the client closed (after what is
        buffered), and the relay ends once both are.
        """
        self.backend.close()
        self.assertTrue(self.client.transport.disconnecting)
        self.assertEqual(self.h.ended, [])
        self.client.close()
        self.assertEqual(len(self.h.ended), 1)

    def test_abort(self):
        """
        The end of a graceful shutdown cuts both connections.
        """
        self.h.factory.abort_all()
        self.assertTrue(self.client.transport.disconnecting)
        self.assertTrue(self.backend.transport.disconnecting)


class LimitTests(SynchronousTestCase):
    """
    The listener's connection limit.
    """

    def test_max_connections(self):
        """
        Beyond C{max_connections} relays at once, a connection is closed
        as soon as it is made, without a backend connection, and logged
        when it ends (503 C{max_connections}, counted as rejected); one
        more is relayed once one ends.
        """
        h = RelayHarness(config(listener_options="max_connections = 2"))
        first = h.client()
        h.client()
        refused = h.client(port=40002)
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(h.ended, [])
        refused.close()
        [ended] = h.ended
        self.assertEqual((ended.status, ended.reason, ended.backend, h.factory.rejected),
                         (503, "max_connections", None, 1))
        self.assertEqual(len(h.reactor.tcpClients), 2)
        h.accept().close()
        first.close()
        self.assertIsNotNone(h.client())


class ProxyHeaderTests(SynchronousTestCase):
    """
    Backends configured for the PROXY protocol learn the client's address.
    """

    def test_v1_header_first(self):
        """
        A group with C{proxy_protocol = "v1"} gets a version 1 line naming
        the client and the address it connected to, before its bytes.
        """
        h = RelayHarness(config('proxy_protocol = "v1"'))
        client = h.client(host="192.0.2.7", port=40001)
        client.protocol.dataReceived(b"hi")
        backend = h.accept()
        self.assertEqual(backend.received(),
                         b"PROXY TCP4 192.0.2.7 10.0.0.1 40001 5433\r\nhi")

    def test_v2_header(self):
        """
        C{proxy_protocol = "v2"} sends the binary header.
        """
        h = RelayHarness(config('proxy_protocol = "v2"'))
        h.client(host="192.0.2.7", port=40001)
        data = h.accept().received()
        header, used = parse_proxy_header(data)
        self.assertEqual(used, len(data))
        self.assertEqual((header.version, header.source, header.destination),
                         (2, ("192.0.2.7", 40001), ("10.0.0.1", 5433)))


    def test_accepted_from_trusted_only(self):
        """
        On a listener that accepts PROXY headers, a trusted peer's header
        is read and its source becomes the relay's client (what the access
        log and the filters see); an untrusted peer's header is not
        believed: it is relayed to the backend as data and the relay's
        client is the peer itself.
        """
        from twistproxy.proxyproto import ProxyHeaderFactory

        h = RelayHarness(config())
        wrapped = ProxyHeaderFactory(h.factory, lambda host: host == "10.9.9.9", h.reactor, 5)
        line = b"PROXY TCP4 203.0.113.5 10.0.0.1 5555 5433\r\n"
        seen = []
        for peer in ("10.9.9.9", "192.0.2.7"):
            client = Peer(wrapped.buildProtocol(IPv4Address("TCP", peer, 1000)), peer, 1000)
            client.protocol.dataReceived(line + b"hi")
            backend = h.accept()
            (relay,) = h.factory.connections
            seen.append((relay.client_address, backend.received()))
            backend.close()
            client.close()
        self.assertEqual(seen, [("203.0.113.5", b"hi"), ("192.0.2.7", line + b"hi")])
        self.assertEqual([r.client_address for r in h.ended], ["203.0.113.5", "192.0.2.7"])

    def test_v2_terminated_tls(self):
        """
        Behind TLS the proxy terminated (a tcp listener on an C{ssl:}
        endpoint), version 2 also carries the server name the client asked
        for (PP2_TYPE_AUTHORITY) and that it used TLS (PP2_TYPE_SSL).
        """
        from OpenSSL import SSL

        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        connection.set_connect_state()
        connection.set_tlsext_host_name(b"db.example")
        h = RelayHarness(config('proxy_protocol = "v2"'))
        protocol = h.factory.buildProtocol(None)
        transport = HalfCloseTransport(IPv4Address("TCP", "192.0.2.7", 40001))
        transport.getHandle = lambda: connection
        protocol.makeConnection(transport)
        header, _ = parse_proxy_header(h.accept().received())
        self.assertEqual(header.source, ("192.0.2.7", 40001))
        self.assertEqual(header.tlvs, ((PP2_TYPE_AUTHORITY, b"db.example"),
                                       (PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00")))


class AccessLogTests(SynchronousTestCase):
    """
    One access log line per relayed connection.
    """

    def relay(self):
        h = RelayHarness(config())
        client = h.client()
        backend = h.accept()
        client.protocol.dataReceived(b"12345")
        backend.protocol.dataReceived(b"abc")
        h.reactor.advance(2)
        backend.close()
        client.close()
        return h.reactor, h.ended[0]

    def test_combined(self):
        """
        The combined line names the client, the listener, nginx stream's
        status, the bytes sent and received, the backend and the duration.
        """
        clock, relay = self.relay()
        stream = io.BytesIO()
        AccessLogWriter(stream, "combined", clock).connection(relay)
        line = stream.getvalue()
        self.assertTrue(line.startswith(b'192.0.2.7 - - ['), line)
        self.assertTrue(line.endswith(
            b'] "TCP db" 200 3 received=5 upstream=127.0.0.1:5432 server_name=- '
            b'total_time=2.000 reason=-\n'), line)

    def test_json(self):
        """
        The JSON line has the same facts under names.
        """
        clock, relay = self.relay()
        stream = io.BytesIO()
        AccessLogWriter(stream, "json", clock).connection(relay)
        record = json.loads(stream.getvalue())
        del record["time"]
        self.assertEqual(record, {
            "client": "192.0.2.7", "protocol": "TCP", "listener": "db", "status": 200,
            "bytes": 3, "received": 5, "upstream": "127.0.0.1:5432", "server_name": None,
            "total_time": 2.0, "reason": None,
        })


NO_LOG = '[access_log]\npath = ""'


class ServiceTests(SynchronousTestCase):
    """
    TCP listeners in a whole L{ProxyService}.
    """

    def test_graceful_shutdown(self):
        """
        At shutdown a relayed connection goes on until it ends, and the
        shutdown completes then; the access log's line is written.
        """
        from twistproxy.service import ProxyService

        class Kept(io.BytesIO):
            def close(self):
                pass

        reactor = MemoryReactorClock()
        service = ProxyService(config(extra=NO_LOG), reactor)
        stream = Kept()
        service.startService()
        service.access_log = AccessLogWriter(stream, "combined", reactor)
        (port,) = [p for p in reactor.tcpServers if p[0] == 5433]
        client = Peer(port[1].buildProtocol(None), "192.0.2.7", 40000)
        host, backend_port, factory, _, _ = reactor.tcpClients[0]
        backend = Peer(factory.buildProtocol(None), host, backend_port)
        d = service.stopService()
        self.assertNoResult(d)
        client.protocol.dataReceived(b"still here")
        self.assertEqual(backend.received(), b"still here")
        backend.close()
        client.close()
        self.successResultOf(d)
        self.assertIn(b'"TCP db" 200 0 received=10 upstream=127.0.0.1:5432', stream.getvalue())

    def test_drain_deadline(self):
        """
        Relays still open when C{shutdown.drain} runs out are cut.
        """
        from twistproxy.service import ProxyService

        reactor = MemoryReactorClock()
        service = ProxyService(config(extra=NO_LOG + "\n[shutdown]\ndrain = 5"), reactor)
        service.startService()
        (port,) = [p for p in reactor.tcpServers if p[0] == 5433]
        client = Peer(port[1].buildProtocol(None), "192.0.2.7", 40000)
        host, backend_port, factory, _, _ = reactor.tcpClients[0]
        backend = Peer(factory.buildProtocol(None), host, backend_port)
        d = service.stopService()
        reactor.advance(4)
        self.assertFalse(client.transport.disconnecting)
        reactor.advance(1.5)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(backend.transport.disconnecting)
        backend.close()
        client.close()
        self.successResultOf(d)
