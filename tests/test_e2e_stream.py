# -*- test-case-name: tests.test_e2e_stream -*-
"""
End-to-end tests of TCP and UDP proxying: the installed proxy, run by
C{twistd} as a child process, relaying real loopback connections to
servers running in the test process.

Blocking clients run in threads with a timeout on every socket operation;
the proxy is stopped by its PID in cleanup.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

from twisted.internet import defer, protocol, reactor, ssl as twisted_ssl
from twisted.names import client as dns_client, dns
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.wire import Echo
from zope.interface import implementer

from twistproxy.proxyproto import parse as parse_proxy_header
from twistproxy.testing import cert_pem, issue_certificate, pem_bundle

from tests.e2e_support import (
    HOST,
    E2ETestCase,
    OriginFactory,
    dns_server_factory,
    read_access_log,
    unused_port,
)

SIZE = 32 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class _Echo(Echo):
    """
    An echo server that, at the end of its input, closes after sending all
    it echoed (Twisted's own drops what is unsent when its input ends).
    """

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


class _Source(protocol.Protocol):
    """
    Sends C{SIZE} bytes as soon as a connection is made, then closes.
    """

    def connectionMade(self):
        self.transport.write(b"x" * SIZE)
        self.transport.loseConnection()


class _StreamCase(E2ETestCase):
    """
    Starts servers in the test process and the proxy as a child.
    """

    timeout = 60

    def listen(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface=HOST)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def start_proxy(self, config: str) -> defer.Deferred:
        """
        Run the proxy with C{config} and the access log C{access.log}.
        """
        return self.start_configured_proxy(config, access_log="access.log")

    def tcp_config(self, *ports: int, extra: str = "") -> str:
        servers = ", ".join(f'"tcp://{HOST}:{p}"' for p in ports)
        return (
            f'[listeners.relay]\nendpoint = "tcp:0:interface={HOST}"\nprotocol = "tcp"\n'
            f'upstream = "backend"\n\n[upstreams.backend]\nservers = [{servers}]\n{extra}'
        )



class StreamEndToEndTests(_StreamCase):
    """
    The installed proxy with C{protocol = "tcp"} listeners.
    """

    @defer.inlineCallbacks
    def test_echo_and_half_close(self):
        """
        Bytes sent through the relay come back from an echo server; after
        the client ends its sending half it still reads everything that
        was in flight, then end of file; the access log has the line.
        """
        echo = protocol.Factory.forProtocol(_Echo)
        proxy = yield self.start_proxy(self.tcp_config(self.listen(echo)))

        def talk():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                payload = os.urandom(200000)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                return payload, got

        payload, got = yield self.in_thread(talk)
        self.assertEqual(len(got), len(payload))
        self.assertEqual(got, payload)
        yield proxy.stop()
        log = read_access_log(proxy)
        self.assertIn(b'"TCP relay" 200 200000 received=200000', log)

    @defer.inlineCallbacks
    def test_many_round_trips(self):
        """
        Many small request/answer round trips on one relayed connection
        each come back whole.
        """
        echo = protocol.Factory.forProtocol(_Echo)
        proxy = yield self.start_proxy(self.tcp_config(self.listen(echo)))

        def talk():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                for i in range(200):
                    message = b"ping %d\n" % i
                    s.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        got += s.recv(100)
                    assert got == message, (got, message)
                return True

        self.assertTrue((yield self.in_thread(talk)))

    @defer.inlineCallbacks
    def test_retry_on_another_backend(self):
        """
        A backend that refuses connections is skipped: the connection is
        made to the other one.
        """
        closed = socket.socket()
        closed.bind((HOST, 0))
        refusing = closed.getsockname()[1]
        closed.close()
        echo = protocol.Factory.forProtocol(_Echo)
        proxy = yield self.start_proxy(
            self.tcp_config(refusing, self.listen(echo), extra="retries = 1\n"))

        def talk():
            answers = []
            for _ in range(4):
                with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                    s.sendall(b"hello")
                    answers.append(s.recv(100))
            return answers

        self.assertEqual((yield self.in_thread(talk)), [b"hello"] * 4)

    @defer.inlineCallbacks
    def test_health_check_takes_backend_out(self):
        """
        With a tcp health check and no retries, a backend that refuses
        connections is taken out by the check, before any client meets it:
        every connection reaches the other backend.
        """
        closed = socket.socket()
        closed.bind((HOST, 0))
        refusing = closed.getsockname()[1]
        closed.close()
        echo = protocol.Factory.forProtocol(_Echo)
        proxy = yield self.start_proxy(self.tcp_config(
            refusing, self.listen(echo),
            extra="retries = 0\nhealth = { interval = 0.2, fall = 1, rise = 1 }\n"))
        yield self.in_thread(time.sleep, 1.0)
        answers = yield self.in_thread(lambda: [_echoed(proxy.port) for _ in range(6)])
        self.assertEqual(answers, [b"hello"] * 6)

    @defer.inlineCallbacks
    def test_slow_reader_memory_flat(self):
        """
        A backend sends 32 MiB at once to a client that does not read for
        a while: the proxy stops reading the backend instead of buffering,
        so its memory grows by far less than the transfer; then every
        byte arrives.
        """
        proxy = yield self.start_proxy(
            self.tcp_config(self.listen(protocol.Factory.forProtocol(_Source))))
        before = proxy.rss_kib()
        sock = socket.create_connection((HOST, proxy.port), timeout=10)
        self.addCleanup(sock.close)
        yield self.in_thread(time.sleep, 2.0)
        grown = proxy.rss_kib() - before
        self.assertLess(grown, 12 * 1024, f"proxy grew by {grown} KiB")

        def read_all():
            total = 0
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return total
                total += len(chunk)

        self.assertEqual((yield self.in_thread(read_all)), SIZE)

    @defer.inlineCallbacks
    def test_slow_backend_memory_flat(self):
        """
        The other direction: a client sends 32 MiB to a backend that does
        not read for a while: the proxy stops reading the client instead
        of buffering, so its memory grows by far less than the transfer;
        then every byte arrives.
        """
        sink = protocol.Factory.forProtocol(_Sink)
        sink.received = 0
        sink.connections = []
        proxy = yield self.start_proxy(self.tcp_config(self.listen(sink)))
        before = proxy.rss_kib()
        sock = socket.create_connection((HOST, proxy.port), timeout=30)
        self.addCleanup(sock.close)
        sent = self.in_thread(sock.sendall, b"y" * SIZE)
        yield self.in_thread(time.sleep, 2.0)
        grown = proxy.rss_kib() - before
        self.assertLess(grown, 12 * 1024, f"proxy grew by {grown} KiB")
        self.assertLess(sink.received, SIZE // 2)
        for backend in sink.connections:
            backend.transport.resumeProducing()
        yield sent
        while sink.received < SIZE:
            yield self.in_thread(time.sleep, 0.05)
        self.assertEqual(sink.received, SIZE)

    @defer.inlineCallbacks
    def test_proxy_protocol_in_and_out(self):
        """
        A trusted peer's version 1 header names the client; the backend,
        configured for version 2, gets that client in its header, then the
        client's bytes; the access log names the client too.
        """
        recorder = protocol.Factory.forProtocol(_Recorder)
        recorder.received = b""
        proxy = yield self.start_proxy(
            self.tcp_config(self.listen(recorder), extra='proxy_protocol = "v2"\n')
            .replace('upstream = "backend"', 'upstream = "backend"\nproxy_protocol = ["127.0.0.1"]'))

        def talk():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                s.sendall(b"PROXY TCP4 203.0.113.5 198.51.100.1 5555 443\r\nhi")
                s.shutdown(socket.SHUT_WR)
                s.recv(10)

        yield self.in_thread(talk)
        header, used = parse_proxy_header(recorder.received)
        self.assertEqual((header.version, header.source, header.destination),
                         (2, ("203.0.113.5", 5555), ("198.51.100.1", 443)))
        self.assertEqual(recorder.received[used:], b"hi")
        yield proxy.stop()
        self.assertTrue(read_access_log(proxy).startswith(b"203.0.113.5 - - "))

    @defer.inlineCallbacks
    def test_dns_over_tcp(self):
        """
        A real protocol through the relay: a twisted.names client asks a
        twisted.names server over TCP and gets its answer.
        """
        factory = dns_server_factory()
        proxy = yield self.start_proxy(self.tcp_config(self.listen(factory)))
        resolver = dns_client.Resolver(servers=[(HOST, proxy.port)], reactor=reactor)
        answer = yield resolver.queryTCP([dns.Query(b"www.example.test", dns.A)])
        self.assertEqual([a.payload.dottedQuad() for a in answer.answers], ["192.0.2.80"])
        for connection in list(resolver.connections):
            connection.transport.loseConnection()


class _Sink(protocol.Protocol):
    """
    Does not read until resumed (C{transport.resumeProducing}), then
    counts what it receives in C{factory.received}.
    """

    def connectionMade(self):
        self.transport.pauseProducing()
        self.factory.connections.append(self)

    def dataReceived(self, data):
        self.factory.received += len(data)


def _echoed(port: int, source: str = HOST) -> bytes:
    """
    What comes back of C{b'hello'} sent to C{port} from the address
    C{source} (C{b''} when the connection is closed or reset).
    """
    with socket.create_connection((HOST, port), timeout=10,
                                  source_address=(source, 0)) as s:
        s.sendall(b"hello")
        got = b""
        try:
            while len(got) < 5:
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        return got


class StreamFilterEndToEndTests(_StreamCase):
    """
    Filters and reloads of C{tcp} listeners in the installed proxy.
    """

    @defer.inlineCallbacks
    def test_access_denied(self):
        """
        A client in the listener's deny list (from 127.0.0.2) is closed
        without reaching the backend, and logged 403; another (from
        127.0.0.1) is relayed.
        """
        echo = protocol.Factory.forProtocol(_Echo)
        proxy = yield self.start_proxy(
            self.tcp_config(self.listen(echo)).replace(
                'upstream = "backend"',
                'upstream = "backend"\nfilters = [{ name = "access", deny = ["127.0.0.2"] }]'))
        denied = yield self.in_thread(_echoed, proxy.port, "127.0.0.2")
        allowed = yield self.in_thread(_echoed, proxy.port)
        self.assertEqual((denied, allowed), (b"", b"hello"))
        yield proxy.stop()
        log = read_access_log(proxy)
        self.assertRegex(log, rb'127\.0\.0\.2 - - \[[^]]+\] "TCP relay" 403 0 received=0 '
                              rb'upstream=- .* reason=access_denied\n')
        self.assertIn(b'"TCP relay" 200 5 received=5', log)

    @defer.inlineCallbacks
    def test_reload_adds_and_removes_listeners(self):
        """
        SIGHUP with a file that adds a tcp listener and removes another:
        the new one relays, the removed one's port refuses connections,
        the unchanged one goes on relaying.
        """
        backend = self.listen(protocol.Factory.forProtocol(_Echo))
        old_port, new_port = unused_port(), unused_port()
        base = self.tcp_config(backend)

        def listener(name, port):
            return (f'\n[listeners.{name}]\nendpoint = "tcp:{port}:interface={HOST}"\n'
                    f'protocol = "tcp"\nupstream = "backend"\n')

        proxy = yield self.start_proxy(base + listener("old", old_port))
        # The proxy is reported started once its first listener listens.
        yield proxy.wait_for_line(r"listener old listening")
        self.assertEqual((yield self.in_thread(_echoed, old_port)), b"hello")
        yield self.reload(proxy, self.config_text(proxy).replace(
            listener("old", old_port), listener("new", new_port)), timeout=5)
        self.assertEqual((yield self.in_thread(_echoed, new_port)), b"hello")
        self.assertEqual((yield self.in_thread(_echoed, proxy.port)), b"hello")
        yield self.assertFailure(self.in_thread(_echoed, old_port),
                                 ConnectionRefusedError)


class UDPEndToEndTests(_StreamCase):
    """
    The installed proxy with a C{protocol = "udp"} listener.
    """

    @defer.inlineCallbacks
    def test_dns_over_udp(self):
        """
        DNS over UDP through the proxy: many twisted.names queries, each
        from a socket of its own (so a session each), all get the answer
        of the twisted.names server behind, and the sessions are logged.
        """
        factory = dns_server_factory()
        port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface=HOST)
        self.addCleanup(port.stopListening)
        proxy = yield self.start_proxy(f"""
[listeners.dns]
endpoint = "udp:0:interface={HOST}"
protocol = "udp"
upstream = "dns"

[upstreams.dns]
servers = ["udp://{HOST}:{port.getHost().port}"]
balancer = "client_ip_hash"
""")
        resolver = dns_client.Resolver(servers=[(HOST, proxy.port)], reactor=reactor)
        answers = yield defer.gatherResults([
            resolver.queryUDP([dns.Query(b"www.example.test", dns.A)], timeout=(5,))
            for _ in range(40)
        ])
        self.assertEqual({a.answers[0].payload.dottedQuad() for a in answers}, {"192.0.2.80"})
        self.assertEqual([len(a.answers) for a in answers], [1] * 40)
        yield proxy.stop()
        lines = [l for l in read_access_log(proxy).splitlines() if b'"UDP dns" 200' in l]
        self.assertEqual(len(lines), 40)

    @defer.inlineCallbacks
    def test_large_datagram(self):
        """
        A 30000-byte datagram goes to the backend and back whole (not cut
        to Twisted's default 8192 bytes).
        """
        port = reactor.listenUDP(0, _UDPEcho(), interface=HOST, maxPacketSize=65535)
        self.addCleanup(port.stopListening)
        proxy = yield self.start_proxy(f"""
[listeners.echo]
endpoint = "udp:0:interface={HOST}"
protocol = "udp"
upstream = "echo"

[upstreams.echo]
servers = ["udp://{HOST}:{port.getHost().port}"]
""")
        payload = os.urandom(30000)

        def round_trip():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(10)
                s.sendto(payload, (HOST, proxy.port))
                return s.recv(65535)

        self.assertEqual((yield self.in_thread(round_trip)), payload)


class _UDPEcho(protocol.DatagramProtocol):
    """
    Sends every datagram back to where it came from.
    """

    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


class _Recorder(protocol.Protocol):
    """
    Keeps what it receives in C{factory.received}.
    """

    def dataReceived(self, data):
        self.factory.received += data


class _Named(protocol.Protocol):
    """
    Answers every read with the name of its server, then closes.
    """

    def dataReceived(self, data):
        self.transport.write(self.factory.name)
        self.transport.loseConnection()


class PassthroughEndToEndTests(_StreamCase):
    """
    TLS passthrough by SNI with real handshakes: the certificate a client
    receives shows which server it reached.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.root = issue_certificate("Stream Root", ca=True)
        self.root_file = self.write("root.pem", cert_pem(self.root[1]))

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def tls_backend(self, name: str) -> int:
        """
        A TLS server for C{name} (its certificate's only name) that
        answers with its name.
        """
        pem = pem_bundle(issue_certificate(name, (name,), issuer=self.root))
        options = twisted_ssl.PrivateCertificate.loadPEM(pem.decode("ascii")).options()
        factory = protocol.Factory.forProtocol(_Named)
        factory.name = name.encode("ascii")
        port = reactor.listenSSL(0, factory, options, interface=HOST)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def fetch(self, port: int, name: str, request: bytes = b"?", until: bytes = b"\0"):
        """
        Connect with TLS asking for C{name}; return the common name of the
        certificate received and what the server answered (up to its end,
        or to C{until}).
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.root_file)

        def run():
            with socket.create_connection((HOST, port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=name) as s:
                    subject = dict(x[0] for x in s.getpeercert()["subject"])
                    s.sendall(request)
                    answer = b""
                    while True:
                        try:
                            chunk = s.recv(4096)
                        except ssl.SSLError:
                            break
                        answer += chunk
                        if not chunk or answer.endswith(until):
                            break
                    return subject["commonName"], answer

        return self.in_thread(run)

    @defer.inlineCallbacks
    def test_two_backends_by_name(self):
        """
        Connections asking for a.example.test and b.example.test reach the
        TLS server holding that name's certificate; a wildcard route takes
        any name below c.example.test; a garbage first flight is closed.
        """
        a, b = self.tls_backend("a.example.test"), self.tls_backend("b.example.test")
        c = self.tls_backend("x.c.example.test")
        proxy = yield self.start_proxy(f"""
[listeners.edge]
endpoint = "tcp:0:interface={HOST}"
protocol = "tcp"
sni = [{{hosts = ["a.example.test"], upstream = "a"}},
       {{hosts = ["*.c.example.test"], upstream = "c"}}]
upstream = "b"

[upstreams.a]
servers = ["tcp://{HOST}:{a}"]
[upstreams.b]
servers = ["tcp://{HOST}:{b}"]
[upstreams.c]
servers = ["tcp://{HOST}:{c}"]
""")
        self.assertEqual((yield self.fetch(proxy.port, "a.example.test")),
                         ("a.example.test", b"a.example.test"))
        self.assertEqual((yield self.fetch(proxy.port, "b.example.test")),
                         ("b.example.test", b"b.example.test"))
        self.assertEqual((yield self.fetch(proxy.port, "x.c.example.test")),
                         ("x.c.example.test", b"x.c.example.test"))

        def garbage():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                s.sendall(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00")
                try:
                    return s.recv(100)
                except ConnectionResetError:
                    return b""

        self.assertEqual((yield self.in_thread(garbage)), b"")

    @defer.inlineCallbacks
    def test_proxy_protocol_to_https_backend(self):
        """
        An https backend that expects the PROXY protocol before its TLS
        (here twistproxy's own header reader in front of a TLS server)
        verifies the proxy's handshake and sees the client's address and
        port, not the proxy's.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from twistproxy.proxyproto import ProxyHeaderFactory

        pem = pem_bundle(issue_certificate(HOST, (HOST,), issuer=self.root))
        options = twisted_ssl.PrivateCertificate.loadPEM(pem.decode("ascii")).options()
        origin = OriginFactory(lambda proto, req: proto.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
                len(peer_of(proto)), peer_of(proto))))
        self.addCleanup(lambda: [p.transport.abortConnection() for p in list(origin.open)])

        def peer_of(proto):
            peer = proto.transport.getPeer()
            return b"%s:%d" % (peer.host.encode("ascii"), peer.port)

        backend = self.listen(ProxyHeaderFactory(
            TLSMemoryBIOFactory(options, False, origin), lambda host: True, reactor, 5))
        proxy = yield self.start_proxy(f"""
[listeners.web]
endpoint = "tcp:0:interface={HOST}"

[upstreams.app]
servers = ["https://{HOST}:{backend}"]
proxy_protocol = "v2"
tls = {{ ca = "{self.root_file}" }}
""")

        def get():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                answer = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        return s.getsockname(), answer
                    answer += chunk

        (host, port), answer = yield self.in_thread(get)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\n%s:%d" % (host.encode("ascii"), port)), answer)

    @defer.inlineCallbacks
    def test_mixed_with_termination(self):
        """
        On an HTTP listener with TLS, a passthrough name reaches its TLS
        backend with the backend's certificate, while another name is
        terminated with the listener's certificate and proxied as HTTP.
        """
        a = self.tls_backend("a.example.test")
        origin = OriginFactory(lambda proto, req: proto.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\norigin"))
        origin_port = self.listen(origin)
        self.addCleanup(lambda: [p.transport.abortConnection() for p in list(origin.open)])
        www = self.write("www.pem", pem_bundle(
            issue_certificate("www.example.test", ("www.example.test",), issuer=self.root)))
        proxy = yield self.start_proxy(f"""
[listeners.web]
endpoint = "tcp:0:interface={HOST}"
tls = {{certificates = ["{www}"]}}
sni = [{{hosts = ["a.example.test"], upstream = "a"}}]

[upstreams.a]
servers = ["tcp://{HOST}:{a}"]
[upstreams.app]
servers = ["http://{HOST}:{origin_port}"]
""")
        self.assertEqual((yield self.fetch(proxy.port, "a.example.test")),
                         ("a.example.test", b"a.example.test"))
        name, answer = yield self.fetch(
            proxy.port, "www.example.test",
            b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n", until=b"origin")
        self.assertEqual(name, "www.example.test")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"origin"), answer)
