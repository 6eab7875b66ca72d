"""
Tests for UDP proxying (L{twistproxy.stream.udp}) on fake datagram
sockets and a fake clock.
"""

from __future__ import annotations

import io
import socket

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.accesslog import AccessLogWriter
from twistproxy.config import parse
from twistproxy.build import make_group
from twistproxy.stream.udp import SessionSocket, UDPEndpoint, UDPProxy


class FakeUDPPort:
    """
    A datagram socket that records what is written to it.
    """

    def __init__(self, protocol, port: int, interface: str, max_size: int = 8192):
        self.protocol = protocol
        self.port = port
        self.interface = interface
        self.max_size = max_size
        self.written = []
        self.connected_to = None
        self.listening = True
        protocol.makeConnection(self)

    def write(self, data, addr=None):
        self.written.append((data, addr))

    def connect(self, host, port):
        self.connected_to = (host, port)

    def stopListening(self):
        self.listening = False

    def getHost(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)


class UDPReactor(MemoryReactorClock):
    """
    A memory reactor whose C{listenUDP} makes L{FakeUDPPort}s.
    """

    def __init__(self):
        super().__init__()
        self.udp_ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        fake = FakeUDPPort(protocol, port, interface, maxPacketSize)
        self.udp_ports.append(fake)
        return fake


def config(balancer: str = "round_robin", max_sessions: int = 3):
    return parse(f"""
[listeners.dns]
endpoint = "udp:5353"
protocol = "udp"
upstream = "resolvers"
max_sessions = {max_sessions}

[upstreams.resolvers]
servers = ["udp://10.0.0.1:53", "udp://10.0.0.2:53", "udp://10.0.0.3:53"]
balancer = "{balancer}"

[timeouts]
udp_idle = 10
""")


class UDPProxyTests(SynchronousTestCase):
    """
    Sessions per client, replies to the right client, expiry and the cap.
    """

    def setUp(self, cfg=None):
        cfg = cfg or config()
        self.reactor = UDPReactor()
        self.group = make_group(self.reactor, cfg.upstreams["resolvers"], cfg.timeouts)
        self.ended = []
        listener = cfg.listeners[0]
        self.proxy = UDPProxy(self.reactor, listener.name, listener.upstream,
                              {"resolvers": self.group}, cfg.timeouts, listener.max_sessions,
                              on_end=self.ended.append)
        self.listening = self.reactor.listenUDP(5353, self.proxy)

    def session_port(self, client):
        return self.proxy.sessions[client].port

    def test_session_per_client(self):
        """
        Each client address and port gets its own socket, connected to the
        backend its first datagram was given; later datagrams use it.
        """
        a, b = ("192.0.2.1", 1000), ("192.0.2.1", 1001)
        self.proxy.datagramReceived(b"q1", a)
        self.proxy.datagramReceived(b"q2", b)
        self.proxy.datagramReceived(b"q3", a)
        self.assertEqual(self.session_port(a).connected_to, ("10.0.0.1", 53))
        self.assertEqual(self.session_port(b).connected_to, ("10.0.0.2", 53))
        self.assertEqual(self.session_port(a).written, [(b"q1", None), (b"q3", None)])
        self.assertEqual([b.in_flight for b in self.group.backends], [1, 1, 0])

    def test_replies_to_right_client(self):
        """
        A reply on a session's socket goes to that session's client, from
        the listener's socket.
        """
        a, b = ("192.0.2.1", 1000), ("198.51.100.2", 2000)
        self.proxy.datagramReceived(b"q1", a)
        self.proxy.datagramReceived(b"q2", b)
        self.session_port(b).protocol.datagramReceived(b"r2", ("10.0.0.2", 53))
        self.session_port(a).protocol.datagramReceived(b"r1", ("10.0.0.1", 53))
        self.assertEqual(self.listening.written, [(b"r2", b), (b"r1", a)])

    def test_idle_expiry(self):
        """
        A session without a datagram either way for C{udp_idle} seconds
        ends on the clock: its socket closes, its backend is released, the
        access log gets its line; traffic either way postpones it.
        """
        a = ("192.0.2.1", 1000)
        self.proxy.datagramReceived(b"q", a)
        port = self.session_port(a)
        self.reactor.advance(8)
        port.protocol.datagramReceived(b"r", ("10.0.0.1", 53))
        self.reactor.advance(8)
        self.assertIn(a, self.proxy.sessions)
        self.reactor.advance(3)
        self.assertNotIn(a, self.proxy.sessions)
        self.assertFalse(port.listening)
        (session,) = self.ended
        self.assertEqual((session.reason, session.bytes_received, session.bytes_sent),
                         ("idle_timeout", 1, 1))
        self.assertEqual(self.group.backends[0].in_flight, 0)
        self.assertEqual(self.group.in_flight, 0)
        self.proxy.datagramReceived(b"again", a)
        self.assertIsNot(self.session_port(a), port)

    def test_many_clients(self):
        """
        Round trips from many clients at once (200 address and port pairs,
        several datagrams each) each come back to the client that asked,
        whatever the order of the replies; the sessions are spread over the
        backends, and all expire together on the clock, releasing every
        backend.
        """
        self.setUp(config(max_sessions=1000))
        clients = [(f"192.0.2.{i % 50 + 1}", 1000 + i) for i in range(200)]
        for round_ in range(3):
            for client in clients:
                self.proxy.datagramReceived(b"q%d %s:%d" % (round_, client[0].encode(), client[1]),
                                            client)
            for client in reversed(clients):
                port = self.session_port(client)
                query = port.written[-1][0]
                port.protocol.datagramReceived(b"answer to " + query, port.connected_to)
        written = self.listening.written
        self.assertEqual(len(written), 600)
        for data, client in written:
            self.assertTrue(data.endswith(b" %s:%d" % (client[0].encode(), client[1])), data)
        self.assertEqual(sorted(b.in_flight for b in self.group.backends), [66, 67, 67])
        self.reactor.advance(9)
        self.assertEqual(len(self.proxy.sessions), 200)
        self.reactor.advance(2)
        self.assertEqual((len(self.proxy.sessions), len(self.ended)), (0, 200))
        self.assertEqual({(s.bytes_received > 0, s.bytes_sent > s.bytes_received)
                          for s in self.ended}, {(True, True)})
        self.assertEqual([b.in_flight for b in self.group.backends], [0, 0, 0])
        self.assertEqual(self.group.in_flight, 0)

    def test_large_datagrams_whole(self):
        """
        The listener's socket and each session's read datagrams of up to
        65507 bytes (the most UDP carries over IPv4) whole: Twisted's
        default of 8192 would cut the longer ones short.
        """
        self.proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        reactor = UDPReactor()
        listening = self.successResultOf(
            UDPEndpoint(reactor, "udp:53").listen(UDPProxy(reactor, "l", "g", {}, None)))
        self.assertGreaterEqual(listening.max_size, 65507)
        self.assertGreaterEqual(self.session_port(("192.0.2.1", 1000)).max_size, 65507)

    def test_session_cap(self):
        """
        Beyond C{max_sessions}, datagrams from new clients are dropped and
        counted; existing sessions go on; once one ends there is room.
        """
        for port in range(3):
            self.proxy.datagramReceived(b"q", ("192.0.2.1", 1000 + port))
        self.proxy.datagramReceived(b"q", ("192.0.2.9", 9))
        self.assertEqual((len(self.proxy.sessions), self.proxy.dropped), (3, 1))
        self.proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        self.assertEqual(self.proxy.dropped, 1)
        self.reactor.advance(11)
        self.proxy.datagramReceived(b"q", ("192.0.2.9", 9))
        self.assertEqual(list(self.proxy.sessions), [("192.0.2.9", 9)])

    def test_hashing_keeps_client(self):
        """
        With a hashing balancer, a client's sessions from any port go to
        one backend.
        """
        self.setUp(config("client_ip_hash", max_sessions=100))
        for port in range(10):
            self.proxy.datagramReceived(b"q", ("203.0.113.7", 5000 + port))
        backends = {s.port.connected_to for s in self.proxy.sessions.values()}
        self.assertEqual(len(backends), 1)

    def test_refused_ends_session(self):
        """
        A backend port that answers "unreachable" ends the session, and
        counts as a failure of the backend.
        """
        a = ("192.0.2.1", 1000)
        self.proxy.datagramReceived(b"q", a)
        self.session_port(a).protocol.connectionRefused()
        self.assertEqual(self.proxy.sessions, {})
        self.assertEqual(self.ended[0].reason, "upstream_refused")
        self.assertEqual(self.group.backends[0].failures, 1)

    def test_no_backend_drops(self):
        """
        With no backend available, datagrams are dropped.
        """
        for backend in self.group.backends:
            backend.healthy = False
            backend.refresh()
        self.proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        self.assertEqual((self.proxy.sessions, self.proxy.dropped), ({}, 1))

    def test_shutdown_ends_sessions(self):
        """
        A graceful shutdown ends every session at once.
        """
        self.proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        self.successResultOf(self.proxy.drain())
        self.assertEqual(self.proxy.sessions, {})
        self.assertEqual(self.ended[0].reason, "shutdown")

    def test_access_log(self):
        """
        A session's access log line is like a TCP connection's, with UDP.
        """
        self.proxy.datagramReceived(b"query", ("192.0.2.1", 1000))
        self.reactor.advance(11)
        stream = io.BytesIO()
        AccessLogWriter(stream, "combined", self.reactor).connection(self.ended[0])
        self.assertIn(b'"UDP dns" 200 0 received=5 upstream=10.0.0.1:53 server_name=- '
                      b'total_time=11.', stream.getvalue())


class EndpointTests(SynchronousTestCase):
    """
    The endpoint strings of udp listeners.
    """

    def test_parse(self):
        """
        C{udp:PORT} with an optional interface, IPv6 colons escaped.
        """
        reactor = UDPReactor()
        endpoint = UDPEndpoint(reactor, "udp:53:interface=127.0.0.1")
        self.assertEqual((endpoint.port, endpoint.interface), (53, "127.0.0.1"))
        self.assertEqual(UDPEndpoint(reactor, r"udp:53:interface=\:\:1").interface, "::1")
        port = self.successResultOf(endpoint.listen(UDPProxy(reactor, "l", "g", {}, None)))
        self.assertEqual((port.port, port.interface), (53, "127.0.0.1"))

    def test_invalid(self):
        """
        Anything else is refused.
        """
        for bad in ["tcp:53", "udp:", "udp:x", "udp:70000", "udp:53:backlog=5"]:
            self.assertRaises(ValueError, UDPEndpoint, UDPReactor(), bad)


class ReloadTests(SynchronousTestCase):
    """
    A reload that changes a udp listener but keeps its endpoint.
    """

    def test_new_settings_take_the_port(self):
        """
        The port's datagrams from new clients go to the new settings (here
        another upstream group); before, the port kept delivering to the
        old proxy, which no longer found its group and failed.
        """
        import os

        from twistproxy.config import load
        from twistproxy.service import ProxyService

        text = (
            '[access_log]\npath = ""\n'
            '[listeners.dns]\nendpoint = "udp:5353"\nprotocol = "udp"\nupstream = "{g}"\n'
            '[upstreams.{g}]\nservers = ["udp://{ip}:53"]\n'
        )
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text.format(g="a", ip="10.0.0.1"))
        reactor = UDPReactor()
        service = ProxyService(load(path), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with open(path, "w") as f:
            f.write(text.format(g="b", ip="10.0.0.2"))
        self.assertEqual(service.reload(), [])
        (port,) = reactor.udp_ports
        port.protocol.datagramReceived(b"q", ("192.0.2.1", 1000))
        (session,) = port.protocol.sessions.values()
        self.assertEqual(session.backend.host, "10.0.0.2")


class _Recorder(DatagramProtocol):
    """
    Records what a session socket delivers.
    """

    noisy = False

    def __init__(self):
        self.datagrams = []
        self.refused = 0
        self.stopped = 0

    def datagramReceived(self, data, addr):
        self.datagrams.append((data, addr))

    def connectionRefused(self):
        self.refused += 1

    def doStop(self):
        self.stopped += 1


class SessionSocketTests(SynchronousTestCase):
    """
    L{SessionSocket}, the quiet datagram socket of a session, on real
    loopback sockets (read by hand: the memory reactor only records that
    it is to be read).
    """

    def setUp(self):
        self.backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.backend.close)
        self.backend.bind(("127.0.0.1", 0))
        self.backend.settimeout(5)
        self.reactor = MemoryReactorClock()
        self.protocol = _Recorder()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.sock = SessionSocket(self.reactor, self.protocol, *self.backend.getsockname())
        self.addCleanup(self.sock.stopListening)

    def test_relays_both_ways(self):
        """
        A datagram written goes to the connected address; one from there
        is delivered whole, with that address, when the reactor reads.
        """
        self.assertIn(self.sock, self.reactor.getReaders())
        self.sock.write(b"query")
        data, source = self.backend.recvfrom(100)
        self.assertEqual(data, b"query")
        self.backend.sendto(b"x" * 60000, source)
        self.sock.doRead()
        self.assertEqual(self.protocol.datagrams,
                         [(b"x" * 60000, self.backend.getsockname())])

    def test_refused(self):
        """
        A closed port's "unreachable" answer tells the protocol the
        connection was refused.
        """
        self.backend.close()
        self.sock.write(b"query")
        self.sock.doRead()
        self.sock.write(b"again")
        self.assertGreaterEqual(self.protocol.refused, 1)

    def test_stop_quiet(self):
        """
        Stopping closes the socket, stops reading and the protocol, once;
        opening and closing logs nothing (a Twisted UDP port logs two
        lines, one log line per session is the access log's).
        """
        self.sock.stopListening()
        self.sock.stopListening()
        self.assertNotIn(self.sock, self.reactor.getReaders())
        self.assertEqual(self.protocol.stopped, 1)
        self.assertEqual(self.events, [])
