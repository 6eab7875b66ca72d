"""
Tests for the PROXY protocol (L{twistproxy.proxyproto}): parsing and
writing versions 1 and 2 byte-exactly as HAProxy's specification shows,
and accepting headers only from trusted peers.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.net import TrustedProxies
from twistproxy.proxyproto import (
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_SSL,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderFactory,
    encode,
    encode_v1,
    encode_v2,
    parse,
)
from twistproxy.testing import MemoryProxy

# The example of section 2.1 of the specification.
V1_EXAMPLE = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
# The longest lines, from section 2.1.
V1_TCP4_WORST = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
V1_TCP6_WORST = (
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
V1_UNKNOWN_WORST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)
SIGNATURE = bytes.fromhex("0d0a0d0a000d0a515549540a")
# What HAProxy sends for 172.19.0.1:42578 -> 172.19.0.3:80 (version 2,
# PROXY command, TCP over IPv4, 12 address bytes).
V2_TCP4 = SIGNATURE + bytes.fromhex("2111000c" "ac130001" "ac130003" "a652" "0050")


class V1Tests(SynchronousTestCase):
    """
    The text header.
    """

    def test_example(self):
        """
        The specification's example parses to its addresses and ports, and
        the same addresses are written back byte for byte.
        """
        header, used = parse(V1_EXAMPLE + b"GET / HTTP/1.1\r\n")
        self.assertEqual(used, len(V1_EXAMPLE))
        self.assertEqual(header, ProxyHeader(1, ("192.168.0.1", 56324), ("192.168.0.11", 443)))
        self.assertEqual(encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)), V1_EXAMPLE)

    def test_worst_cases(self):
        """
        The longest TCP4, TCP6 and UNKNOWN lines of the specification
        parse; UNKNOWN carries no address, and is what is written when an
        address is not IP.
        """
        header, _ = parse(V1_TCP4_WORST)
        self.assertEqual(header.source, ("255.255.255.255", 65535))
        self.assertEqual(encode_v1(header.source, header.destination), V1_TCP4_WORST)
        header, _ = parse(V1_TCP6_WORST)
        self.assertEqual(header.destination, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535))
        self.assertEqual(encode_v1(header.source, header.destination), V1_TCP6_WORST)
        self.assertEqual(parse(V1_UNKNOWN_WORST), (ProxyHeader(1), len(V1_UNKNOWN_WORST)))
        self.assertEqual(parse(b"PROXY UNKNOWN\r\n"), (ProxyHeader(1), 15))
        self.assertEqual(encode_v1(None, ("10.0.0.1", 80)), b"PROXY UNKNOWN\r\n")

    def test_mixed_families(self):
        """
        An IPv4 client on an IPv6 address is written as TCP6, the IPv4
        address mapped.
        """
        self.assertEqual(encode_v1(("192.0.2.7", 1), ("2001:db8::1", 2)),
                         b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1 2\r\n")

    def test_incomplete(self):
        """
        Any beginning of a valid line asks for more bytes.
        """
        for end in range(1, len(V1_EXAMPLE)):
            self.assertEqual(parse(V1_EXAMPLE[:end]), (None, 0), end)

    def test_malformed(self):
        """
        Lines that break the specification are refused: a wrong family for
        the address, leading zeros, ports above 65535, missing fields, an
        unknown protocol, no CRLF within 107 bytes, and anything that is not
        a PROXY header at all.
        """
        for bad in [
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
            b"PROXY " + b"1" * 110,
            b"GET / HTTP/1.1\r\n",
        ]:
            self.assertRaises(ProxyHeaderError, parse, bad)


class V2Tests(SynchronousTestCase):
    """
    The binary header.
    """

    def test_haproxy_tcp4(self):
        """
        HAProxy's version 2 header for an IPv4 connection parses to its
        addresses, and the same addresses are written back byte for byte.
        """
        header, used = parse(V2_TCP4 + b"GET /")
        self.assertEqual(used, len(V2_TCP4))
        self.assertEqual(header, ProxyHeader(2, ("172.19.0.1", 42578), ("172.19.0.3", 80)))
        self.assertEqual(encode_v2(("172.19.0.1", 42578), ("172.19.0.3", 80)), V2_TCP4)

    def test_tcp6_with_authority(self):
        """
        An IPv6 header carries 36 address bytes, then the TLVs: here the
        server name (PP2_TYPE_AUTHORITY) and the TLS flag (PP2_TYPE_SSL).
        """
        data = encode("v2", ("2001:db8::7", 1234), ("2001:db8::1", 443),
                      server_name="db.example", tls=True)
        authority = bytes([PP2_TYPE_AUTHORITY]) + b"\x00\x0adb.example"
        ssl = bytes([PP2_TYPE_SSL]) + b"\x00\x05" + b"\x01\x00\x00\x00\x00"
        addresses = (bytes.fromhex("20010db8000000000000000000000007")
                     + bytes.fromhex("20010db8000000000000000000000001") + b"\x04\xd2\x01\xbb")
        self.assertEqual(data, SIGNATURE + b"\x21\x21" + (36 + len(authority) + len(ssl)).to_bytes(2, "big")
                         + addresses + authority + ssl)
        header, used = parse(data)
        self.assertEqual(used, len(data))
        self.assertEqual(header.source, ("2001:db8::7", 1234))
        self.assertEqual(header.tlvs, ((PP2_TYPE_AUTHORITY, b"db.example"),
                                       (PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00")))

    def test_local(self):
        """
        The LOCAL command (a health check from the load balancer itself)
        has no addresses: the connection's own peer stands.
        """
        data = encode_v2(None, None, local=True)
        self.assertEqual(data, SIGNATURE + b"\x20\x00\x00\x00")
        self.assertEqual(parse(data), (ProxyHeader(2), 16))

    def test_incomplete(self):
        """
        Any beginning of a valid header asks for more bytes.
        """
        for end in range(1, len(V2_TCP4)):
            self.assertEqual(parse(V2_TCP4[:end]), (None, 0), end)

    def test_malformed(self):
        """
        A wrong version, an unknown command, a length too short for the
        family, and a truncated TLV are refused.
        """
        for bad in [
            SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,
            SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,
            SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8,
            SIGNATURE + b"\x21\x11\x00\x0e" + b"\x00" * 12 + b"\x02\x00",
            SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c",
        ]:
            self.assertRaises(ProxyHeaderError, parse, bad)


class Recorder(Protocol):
    """
    Keeps its peer and the bytes it receives.
    """

    def __init__(self):
        self.data = b""
        self.peer = None

    def connectionMade(self):
        self.peer = self.transport.getPeer()

    def dataReceived(self, data):
        self.data += data


def recording_factory(built: list) -> Factory:
    """
    A factory of L{Recorder}s, each appended to C{built}.
    """
    def build(addr):
        protocol = Recorder()
        built.append(protocol)
        return protocol

    factory = Factory()
    factory.buildProtocol = build
    return factory


class AcceptTests(SynchronousTestCase):
    """
    L{ProxyHeaderFactory} on a listener.
    """

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.built = []
        self.factory = ProxyHeaderFactory(
            recording_factory(self.built), TrustedProxies(["10.0.0.0/8"]).__contains__, self.clock, 5.0)

    def connect(self, host: str):
        addr = IPv4Address("TCP", host, 50000)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_trusted_peer(self):
        """
        From a trusted peer, the protocol behind is made once the header is
        read, sees the header's source as its peer, and gets the bytes that
        follow.
        """
        protocol, transport = self.connect("10.1.2.3")
        self.assertEqual(self.built, [])
        protocol.dataReceived(V1_EXAMPLE[:10])
        protocol.dataReceived(V1_EXAMPLE[10:] + b"hello")
        (inner,) = self.built
        self.assertEqual((inner.peer.host, inner.peer.port), ("192.168.0.1", 56324))
        self.assertEqual(inner.transport.getHost().port, 443)
        self.assertEqual(inner.data, b"hello")
        protocol.dataReceived(b" world")
        self.assertEqual(inner.data, b"hello world")

    def test_untrusted_peer(self):
        """
        From any other peer, the header is not read: the protocol behind
        gets it as data, with the real peer.
        """
        protocol, transport = self.connect("192.0.2.9")
        protocol.dataReceived(V1_EXAMPLE)
        self.assertEqual(protocol.peer.host, "192.0.2.9")
        self.assertEqual(protocol.data, V1_EXAMPLE)

    def test_malformed_closes(self):
        """
        A trusted peer whose header is malformed is disconnected, and
        nothing is built.
        """
        protocol, transport = self.connect("10.1.2.3")
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.built, [])

    def test_timeout(self):
        """
        A trusted peer that does not finish its header in time is
        disconnected.
        """
        protocol, transport = self.connect("10.1.2.3")
        protocol.dataReceived(b"PROXY TCP4")
        self.clock.advance(4)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1.5)
        self.assertTrue(transport.disconnecting)


class HTTPListenerTests(SynchronousTestCase):
    """
    The real client address of a PROXY header reaches the HTTP pipeline.
    """

    def setUp(self):
        self.proxy = MemoryProxy()
        self.factory = ProxyHeaderFactory(
            self.proxy.factory, TrustedProxies(["10.0.0.0/8"]).__contains__,
            self.proxy.reactor, 5.0)

    def request(self, host: str, data: bytes) -> StringTransport:
        addr = IPv4Address("TCP", host, 50000)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr, lenient=True)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return transport

    def test_forwarded_for_real_client(self):
        """
        Behind a trusted load balancer, X-Forwarded-For names the client
        of the PROXY header, not the balancer.
        """
        self.request("10.1.2.3", V2_TCP4 + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.proxy.accept_backend()
        sent = backend.transport.value()
        self.assertIn(b"\r\nX-Forwarded-For: 172.19.0.1\r\n", sent)

    def test_untrusted_header_is_bad_request(self):
        """
        From an untrusted peer a PROXY header is not believed: the HTTP
        listener sees it as a malformed request and answers 400.
        """
        transport = self.request("192.0.2.9", V1_EXAMPLE + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertEqual(self.proxy.backend_attempts(), [])


class ServiceTests(SynchronousTestCase):
    """
    A whole L{ProxyService} with an HTTP listener that accepts PROXY
    headers: the client they name is the one its filters, the backend's
    forwarding fields and the access log see.
    """

    def test_real_client_drives_filters_fields_and_log(self):
        """
        Behind a trusted load balancer, a client the access rules deny is
        answered 403, the rate limit counts per real client (a second
        request from one is 429, another client passes), the backend's
        C{X-Forwarded-For} and C{Forwarded} name the real client, and so
        does each access log line.
        """
        import io

        from twistproxy.accesslog import AccessLogWriter
        from twistproxy.config import parse as parse_config
        from twistproxy.service import ProxyService
        from twistproxy.testing import MemoryPeer

        class Kept(io.BytesIO):
            def close(self):
                pass

        reactor = MemoryReactorClock()
        service = ProxyService(parse_config("""
[access_log]
path = ""

[listeners.web]
endpoint = "tcp:8080"
proxy_protocol = ["10.0.0.0/8"]
filters = [
    { name = "access", deny = ["192.0.2.0/24"] },
    { name = "rate_limit", rate = 1, burst = 1 },
]

[upstreams.app]
servers = ["http://127.0.0.1:8001"]
"""), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        stream = Kept()
        service.access_log = AccessLogWriter(stream, "combined", reactor)
        (port,) = [p for p in reactor.tcpServers if p[0] == 8080]
        connections, backends = [], []

        def request(source: str) -> bytes:
            balancer = IPv4Address("TCP", "10.1.2.3", 50000)
            client = MemoryPeer(port[1].buildProtocol(balancer), peer=balancer)
            client.send(encode_v1((source, 40000), ("10.0.0.1", 8080))
                        + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            if len(reactor.tcpClients) > len(connections):
                host, backend_port, factory, _, _ = reactor.tcpClients[len(connections)]
                address = IPv4Address("TCP", host, backend_port)
                connections.append(MemoryPeer(factory.buildProtocol(address), peer=address))
            sent = connections[-1].received() if connections else b""
            if sent:
                backends.append(sent)
                connections[-1].send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return client.received()[:12]

        answers = [request(source) for source in
                   ("192.0.2.7", "198.51.100.1", "198.51.100.1", "198.51.100.2")]
        self.assertEqual(answers, [b"HTTP/1.1 403", b"HTTP/1.1 200", b"HTTP/1.1 429",
                                   b"HTTP/1.1 200"])
        self.assertIn(b"\r\nX-Forwarded-For: 198.51.100.1\r\n", backends[0])
        self.assertIn(b"\r\nForwarded: for=198.51.100.1;", backends[0])
        self.assertIn(b"\r\nX-Forwarded-For: 198.51.100.2\r\n", backends[1])
        clients = [line.split(b" ")[0] for line in stream.getvalue().splitlines()]
        self.assertEqual(clients, [b"192.0.2.7", b"198.51.100.1", b"198.51.100.1",
                                   b"198.51.100.2"])


def proxy_to(server: str, version: str) -> MemoryProxy:
    """
    A L{MemoryProxy} whose one upstream group, of C{server}, gets PROXY
    headers of C{version}.
    """
    from twistproxy.config import parse as parse_config

    return MemoryProxy(parse_config(f"""
[listeners.web]
endpoint = "tcp:8080"
[upstreams.app]
servers = ["{server}"]
proxy_protocol = "{version}"
"""))


class HTTPBackendTests(SynchronousTestCase):
    """
    HTTP backends of a group with C{proxy_protocol} get a PROXY header on
    each connection, and a connection only carries the requests of the
    client connection it names.
    """

    def setUp(self):
        self.proxy = proxy_to("http://127.0.0.1:8001", "v1")

    def exchange(self, client, backend=None):
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        if backend is None:
            backend = self.proxy.accept_backend()
        sent = backend.received()
        backend.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return backend, sent

    def test_header_per_client_connection(self):
        """
        The first request of a client connection opens a backend
        connection that starts with the client's PROXY line; its next
        request reuses that connection without a header; another client
        connection gets a connection of its own.
        """
        first = self.proxy.connect_client("192.0.2.7", 40000)
        backend, sent = self.exchange(first)
        host = first.transport.getHost()
        self.assertTrue(sent.startswith(
            b"PROXY TCP4 192.0.2.7 %s 40000 %d\r\nGET / HTTP/1.1\r\n"
            % (host.host.encode("ascii"), host.port)), sent)
        _, sent = self.exchange(first, backend)
        self.assertTrue(sent.startswith(b"GET / HTTP/1.1\r\n"), sent)
        second = self.proxy.connect_client("198.51.100.3", 40001)
        second.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.proxy.backend_attempts(), [("127.0.0.1", 8001)])
        other = self.proxy.accept_backend()
        self.assertTrue(other.received().startswith(b"PROXY TCP4 198.51.100.3 "))


class HTTPSBackendTests(SynchronousTestCase):
    """
    An https backend configured for the PROXY protocol gets the header in
    the clear, before the TLS handshake.
    """

    def test_header_before_client_hello(self):
        """
        The connection to the backend starts with the PROXY header, then a
        ClientHello for the backend's name: the header is not sent inside
        TLS, where a server expecting it would find a ClientHello instead.
        """
        from twistproxy.stream.sni import server_name

        proxy = proxy_to("https://backend.example:8443", "v2")
        proxy.connect_client("192.0.2.7", 40000).send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(proxy.backend_attempts(), [("backend.example", 8443)])
        sent = proxy.accept_backend().received()
        header, used = parse(sent)
        self.assertEqual(header.source, ("192.0.2.7", 40000))
        self.assertEqual(server_name(sent[used:]), "backend.example")
        self.assertNotIn(b"GET /", sent)


class TLSFactsTests(SynchronousTestCase):
    """
    What version 2 headers say of TLS the proxy terminated.
    """

    def tls_transport(self, name: bytes):
        from OpenSSL import SSL

        connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        connection.set_connect_state()
        if name:
            connection.set_tlsext_host_name(name)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        transport.getHandle = lambda: connection
        return transport

    def test_server_name(self):
        """
        L{tls_server_name} gives the name of a TLS connection, C{''} when
        none was sent, and C{None} for a connection without TLS.
        """
        from twistproxy.proxyproto import tls_server_name

        self.assertEqual(tls_server_name(self.tls_transport(b"Www.Example")), "www.example")
        self.assertEqual(tls_server_name(self.tls_transport(b"")), "")
        self.assertIsNone(tls_server_name(StringTransport()))

    def test_http_backend_header(self):
        """
        An HTTP backend configured for version 2, behind a TLS client
        connection, gets the server name (PP2_TYPE_AUTHORITY) and the TLS
        flag (PP2_TYPE_SSL).
        """
        proxy = proxy_to("http://127.0.0.1:8001", "v2")
        protocol = proxy.factory.buildProtocol(None)
        transport = self.tls_transport(b"www.example")
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        header, _ = parse(proxy.accept_backend().received())
        self.assertEqual(header.source, ("192.0.2.7", 40000))
        self.assertEqual(dict(header.tlvs), {PP2_TYPE_AUTHORITY: b"www.example",
                                             PP2_TYPE_SSL: b"\x01\x00\x00\x00\x00"})
