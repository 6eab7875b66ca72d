# -*- test-case-name: tests.test_balancers -*-
"""
Helpers for testing twistproxy plugins.

Plugin authors use these in their own test suites, so that every
implementation of a role is held to the same contract as the built-in ones:

  - L{FakeRequestInfo}, an L{IRequestInfo} built from plain values, to pass
    to a balancer's C{pick};

  - L{make_exchange}, L{run_filters} and L{send_response}, which run
    filters over a request and a response without a proxy, and
    L{RecordingSink}, which records what reaches the client (see
    docs/filters.rst);

  - L{BalancerContractMixin}, a mixin for C{twisted.trial.unittest.TestCase}
    whose tests every L{IBalancer} must pass.  Mix it into a test case and
    define C{makeBalancer}::

        from twisted.trial.unittest import SynchronousTestCase
        from twistproxy.testing import BalancerContractMixin

        class MyBalancerContractTests(
            BalancerContractMixin, SynchronousTestCase
        ):
            def makeBalancer(self, backends):
                return myFactory.fromConfig(backends, {}, "test")

  - L{CacheStoreContractMixin}, the tests every L{ICacheStore} must pass,
    and L{FakeCacheStore}, a store in a dict;

Nothing here needs a reactor.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping as _MappingABC
from unittest import SkipTest
from typing import (
    Any,
    Deque,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistproxy.interfaces import (
    IBackend, IBalancer, ICacheStore, IRequestInfo, IResponseSink, IRetryBalancer,
)
from twistproxy.upstream.backend import Backend
from twistproxy.upstream.balancers import pick_untried


@implementer(IRequestInfo)
class FakeRequestInfo:
    """
    An L{IRequestInfo} made of the values given to it.

    @param headers: The request's header fields, as a mapping or as an
        iterable of C{(name, value)} pairs (to give a field more than once);
        names in any case.
    """

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        host: str = "example.com",
        client_address: str = "127.0.0.1",
        headers: Optional[
            Union[Mapping[str, str], Iterable[Tuple[str, str]]]
        ] = None,
    ) -> None:
        self.method = method
        self.path = path
        self.host = host
        self.client_address = client_address
        if headers is None:
            pairs: Iterable[Tuple[str, str]] = ()
        elif isinstance(headers, _MappingABC):
            pairs = headers.items()
        else:
            pairs = headers
        self._headers: List[Tuple[str, str]] = [
            (name.lower(), value) for name, value in pairs
        ]

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for field, value in self._headers:
            if field == name:
                return value
        return None

    def cookie(self, name: str) -> Optional[str]:
        from twistproxy.http.headers import find_cookie

        return find_cookie((v for f, v in self._headers if f == "cookie"), name)

    def __repr__(self) -> str:
        return (
            f"<FakeRequestInfo {self.method} {self.host}{self.path}"
            f" from {self.client_address}>"
        )


def _backends(*weights: int) -> List[Backend]:
    """
    Backends named C{'b0'}, C{'b1'}, ... with the given weights.
    """
    return [
        Backend(f"b{i}", "http", "127.0.0.1", 8000 + i, weight)
        for i, weight in enumerate(weights)
    ]


class BalancerContractMixin:
    """
    The tests every L{IBalancer} must pass.

    Mix into a trial C{TestCase} and define L{makeBalancer}.  The class
    attributes tune the tests for balancers that are not round robin:

    @cvar honoursWeights: Set to C{False} for a balancer that ignores
        weights by design; the weight tests are then skipped.
    @cvar weightPicks: How many requests the weight tests place.
    @cvar weightTolerance: How far, as a fraction of all picks, each
        backend's share may be from its weight's share in the weight tests:
        C{0.02} means within two percentage points.  A randomised balancer
        may need more, and so may a hashing one (its shares over many keys
        are only as even as its ring or table).
    @cvar concurrency: How many requests the tests keep in flight, as the
        proxy does: a picked backend's C{in_flight} is raised at once and
        lowered again C{concurrency} picks later (all are lowered at the end
        of each batch of picks).  Balancers that prefer the least loaded
        backend only follow weights under load; C{0} places requests
        without ever raising C{in_flight}.
    """

    honoursWeights = True
    weightPicks = 6000
    weightTolerance = 0.02
    concurrency = 30

    def makeBalancer(self, backends: Sequence[IBackend]) -> IBalancer:
        """
        Build the balancer under test over C{backends}.  Subclasses must
        define this.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define makeBalancer(backends)"
        )

    def makeRequest(self, index: int) -> IRequestInfo:
        """
        The C{index}th request of a test.  Requests differ in client address
        and path, so that balancers that hash either still spread them.
        Override to vary what your balancer looks at.
        """
        return FakeRequestInfo(
            path=f"/item/{index}",
            client_address=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}."
            f"{index & 255}",
        )

    def _pickMany(
        self, balancer: IBalancer, count: int
    ) -> List[Optional[IBackend]]:
        picked: List[Optional[IBackend]] = []
        in_flight: Deque[IBackend] = deque()
        try:
            for i in range(count):
                backend = balancer.pick(self.makeRequest(i))
                picked.append(backend)
                if backend is None or self.concurrency <= 0:
                    continue
                backend.in_flight += 1
                in_flight.append(backend)
                if len(in_flight) > self.concurrency:
                    in_flight.popleft().in_flight -= 1
        finally:
            for backend in in_flight:
                backend.in_flight -= 1
        return picked

    def _assertShares(
        self,
        backends: Sequence[IBackend],
        weights: Sequence[float],
        picked: Sequence[Optional[IBackend]],
    ) -> None:
        """
        Each of C{backends} got its share of C{picked} by C{weights}, within
        C{weightTolerance}.
        """
        counts = Counter(picked)
        self.assertNotIn(None, counts)
        for backend, weight in zip(backends, weights):
            expected = weight / sum(weights)
            share = counts[backend] / len(picked)
            self.assertTrue(
                abs(share - expected) <= self.weightTolerance,
                f"{backend.name} (weight {weight}) got {share:.4f} of the "
                f"picks, expected {expected:.4f} "
                f"\N{PLUS-MINUS SIGN} {self.weightTolerance}",
            )

    def test_provides_IBalancer(self) -> None:
        """
        The balancer provides L{IBalancer}.
        """
        balancer = self.makeBalancer(_backends(1, 1))
        self.assertTrue(verifyObject(IBalancer, balancer))

    def test_picks_a_backend_of_its_group(self) -> None:
        """
        Every pick returns one of the backends the balancer was built with.
        """
        backends = _backends(1, 2, 3)
        balancer = self.makeBalancer(backends)
        for picked in self._pickMany(balancer, 100):
            self.assertIn(picked, backends)

    def test_single_backend(self) -> None:
        """
        A group of one available backend gets every request.
        """
        backends = _backends(3)
        balancer = self.makeBalancer(backends)
        self.assertEqual(self._pickMany(balancer, 50), backends * 50)

    def test_never_picks_unavailable(self) -> None:
        """
        A backend whose C{available} is C{False} is never picked, and the
        others still are.
        """
        backends = _backends(1, 1, 1)
        backends[1].available = False
        balancer = self.makeBalancer(backends)
        picked = self._pickMany(balancer, 300)
        self.assertNotIn(backends[1], picked)
        self.assertEqual(set(picked), {backends[0], backends[2]})

    def test_never_picks_backend_marked_down_later(self) -> None:
        """
        A backend marked unavailable after the balancer was built, and after
        it has been picked, is not picked any more.
        """
        backends = _backends(1, 1, 1)
        balancer = self.makeBalancer(backends)
        self.assertIn(backends[2], self._pickMany(balancer, 300))
        backends[2].available = False
        self.assertNotIn(backends[2], self._pickMany(balancer, 300))

    def test_none_when_all_unavailable(self) -> None:
        """
        When no backend is available, C{pick} returns C{None}.
        """
        backends = _backends(1, 2)
        for backend in backends:
            backend.available = False
        balancer = self.makeBalancer(backends)
        self.assertEqual(self._pickMany(balancer, 10), [None] * 10)

    def test_none_when_all_go_down_later(self) -> None:
        """
        When every backend goes down after the balancer has picked some,
        C{pick} returns C{None}, and picks them again once they are back.
        """
        backends = _backends(1, 2)
        balancer = self.makeBalancer(backends)
        self.assertNotIn(None, self._pickMany(balancer, 100))
        for backend in backends:
            backend.available = False
        self.assertEqual(self._pickMany(balancer, 10), [None] * 10)
        for backend in backends:
            backend.available = True
        self.assertEqual(set(self._pickMany(balancer, 300)), set(backends))

    def test_none_when_no_backends(self) -> None:
        """
        A balancer over an empty group returns C{None}.
        """
        balancer = self.makeBalancer([])
        self.assertIsNone(balancer.pick(self.makeRequest(0)))

    def test_picked_again_when_available_again(self) -> None:
        """
        A backend that was marked down and then available again is picked
        again.
        """
        backends = _backends(1, 1, 1)
        balancer = self.makeBalancer(backends)
        backends[0].available = False
        self.assertNotIn(backends[0], self._pickMany(balancer, 300))
        backends[0].available = True
        self.assertIn(backends[0], self._pickMany(balancer, 300))

    def test_retry_goes_to_untried(self) -> None:
        """
        A retry (L{pick_untried}, which uses C{pick_other} when the balancer
        provides L{IRetryBalancer}) never goes to a backend the request
        was tried on, nor to an unavailable one, reaches every available
        backend of the group, and finds none once they were all tried.
        """
        backends = _backends(1, 2, 3, 1)
        backends[3].available = False
        balancer = self.makeBalancer(backends)
        if IRetryBalancer.providedBy(balancer):
            self.assertTrue(verifyObject(IRetryBalancer, balancer))
        for i in range(20):
            request = self.makeRequest(i)
            tried = [balancer.pick(request)]
            while True:
                other = pick_untried(balancer, backends, request, tried)
                if other is None:
                    break
                self.assertNotIn(other, tried)
                self.assertTrue(other.available)
                tried.append(other)
            self.assertEqual(set(tried), set(backends[:3]))

    def test_honours_weights(self) -> None:
        """
        Over C{weightPicks} requests to backends of weights 1, 2 and 3, each
        backend gets its weight's share of the requests (1/6, 2/6, 3/6),
        within C{weightTolerance}.
        """
        if not self.honoursWeights:
            raise SkipTest(f"{type(self).__name__} ignores weights")
        weights = (1, 2, 3)
        backends = _backends(*weights)
        balancer = self.makeBalancer(backends)
        picked = self._pickMany(balancer, self.weightPicks)
        self._assertShares(backends, weights, picked)

    def test_honours_effective_weights(self) -> None:
        """
        Shares follow C{effective_weight}, not C{weight}, including when it
        changes after the balancer has picked and is a fraction (as during
        slow start): backends of weight 2 whose effective weights become
        0.5, 1 and 1.5 get 1/6, 2/6 and 3/6 of the requests.
        """
        if not self.honoursWeights:
            raise SkipTest(f"{type(self).__name__} ignores weights")
        backends = _backends(2, 2, 2)
        balancer = self.makeBalancer(backends)
        self._pickMany(balancer, 100)
        effective = (0.5, 1.0, 1.5)
        for backend, weight in zip(backends, effective):
            backend.effective_weight = weight
        picked = self._pickMany(balancer, self.weightPicks)
        self._assertShares(backends, effective, picked)


class MemoryProxy:
    """
    A whole proxy on a fake clock and in-memory transports, for testing
    what crosses it byte by byte: write raw bytes as a client, read what
    the backend receives, answer as the backend, read what the client gets.

    Nothing touches the network or the global reactor::

        proxy = MemoryProxy()
        client = proxy.connect_client()
        client.send(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        backend = proxy.accept_backend()
        backend.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
        assert client.received().endswith(b"hi")

    @ivar reactor: The L{MemoryReactorClock} everything runs on; advance it
        to fire timeouts.
    @ivar factory: The L{HTTPServerFactory}.
    @ivar forwarder: The L{Forwarder}.
    @ivar exchanges: Every finished exchange, in order (what the access log
        would see).
    @ivar cache: The shared cache (L{twistproxy.cache.runtime.HTTPCache})
        when a route of the configuration has one, else C{None}.
    """

    def __init__(self, config=None):
        from twisted.internet.testing import MemoryReactorClock

        from twistproxy import build
        from twistproxy.config import (
            Listener, ProxyConfig, Route, Server, UpstreamGroup,
        )

        if config is None:
            config = ProxyConfig(
                listeners=(Listener("main", "tcp:8080"),),
                upstreams={"app": UpstreamGroup(
                    "app", (Server("http://127.0.0.1:8001", "http", "127.0.0.1", 8001),),
                )},
                routes=(Route("app"),),
            )
        self.config = config
        self.reactor = MemoryReactorClock()
        # The assembler's own wiring, up to the HTTP factory of the first
        # listener (inside whatever TLS or PROXY header reader would wrap
        # it: memory transports speak the protocol itself).
        self.cache = build.cache(config, self.reactor)
        _, self.forwarder = build.pipeline(config, self.reactor, self.cache)
        self.exchanges: list = []
        listeners = build.ListenerBuilder(
            self.reactor, config, self.forwarder, on_exchange_end=self.exchanges.append)
        listener = config.listeners[0]
        self.factory = listeners.http(listener, listeners.filters(listener))
        self._accepted = 0

    def connect_client(self, host: str = "192.0.2.7", port: int = 40000) -> "MemoryPeer":
        """
        Connect a client to the proxy.
        """
        from twisted.internet.address import IPv4Address, IPv6Address

        cls = IPv6Address if ":" in host else IPv4Address
        protocol = self.factory.buildProtocol(None)
        return MemoryPeer(protocol, peer=cls("TCP", host, port))

    def backend_attempts(self) -> list:
        """
        The backend connection attempts not yet accepted, as
        C{(host, port)} pairs.
        """
        return [(c[0], c[1]) for c in self.reactor.tcpClients[self._accepted:]]

    def accept_backend(self) -> "MemoryPeer":
        """
        Complete the oldest pending backend connection attempt.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        from twisted.internet.address import IPv4Address

        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        peer = MemoryPeer(protocol, peer=IPv4Address("TCP", host, port))
        peer.connector_factory = factory
        return peer

    def refuse_backend(self, reason=None) -> None:
        """
        Fail the oldest pending backend connection attempt.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        host, port, factory, timeout, bind = self.reactor.tcpClients[self._accepted]
        self._accepted += 1
        factory.clientConnectionFailed(None, Failure(reason or ConnectionRefusedError()))


class MemoryPeer:
    """
    One end of an in-memory connection to the proxy: the proxy's protocol
    and the transport it writes to.
    """

    def __init__(self, protocol, peer):
        from twisted.internet.testing import StringTransport

        self.protocol = protocol
        self.transport = StringTransport(peerAddress=peer, lenient=True)
        self._read = 0
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver bytes to the proxy as if they came from this peer.
        """
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        """
        The bytes the proxy wrote to this peer since the last call.
        """
        value = self.transport.value()
        new, self._read = value[self._read:], len(value)
        return new

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def close(self) -> None:
        """
        The peer closes the connection.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


def issue_certificate(
    common_name: str,
    sans: Sequence[str] = (),
    issuer: Optional[Tuple[Any, Any]] = None,
    ca: bool = False,
    organization: str = "",
    client: bool = False,
    expired: bool = False,
) -> Tuple[Any, Any]:
    """
    A new P-256 key and a certificate for it, for tests that need TLS:
    C{(key, certificate)} as C{cryptography} objects.  Certificates are made
    by the tests, never checked in.

    @param sans: DNS names or IP addresses for the subjectAltName; none
        means no such extension at all.
    @param issuer: C{(key, certificate)} of the issuing CA; self-signed when
        C{None}.
    @param ca: Whether it may issue certificates.
    @param client: Whether it is for TLS clients (else servers).
    @param expired: Valid only in the past (it ended two days ago); else
        valid from an hour ago for two days.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    subject = x509.Name(attributes)
    issuer_key, issuer_cert = issuer if issuer is not None else (key, None)
    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=2)
    else:
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        entries = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def key_pem(key, password: Optional[bytes] = None) -> bytes:
    """
    A private key in PEM (PKCS#8), encrypted with C{password} if given.
    """
    from cryptography.hazmat.primitives import serialization

    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(*certs) -> bytes:
    """
    Certificates in PEM, in order.
    """
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pem_bundle(pair, *chain) -> bytes:
    """
    A key, its certificate and the given intermediates (C{(key,
    certificate)} pairs) in one PEM, as TLS listeners read them.
    """
    return key_pem(pair[0]) + cert_pem(pair[1], *(c[1] for c in chain))


@implementer(IResponseSink)
class RecordingSink:
    """
    The client side of an exchange made by L{make_exchange}: an
    L{IResponseSink} that records what reaches it, for testing filters.

    @ivar interim: The interim (1xx) heads received, as C{(status, fields)}.
    @ivar status: The status of the response head received, or C{None}.
    @ivar fields: Its fields, as (name, value) byte pairs.
    @ivar pieces: The body pieces received, in order.
    @ivar ended: Whether the response ended.
    @ivar failure: C{(status, reason)} when it was told the request
        failed (C{upstream_failed}), else C{None}.
    @ivar trusted: Whether the fake client is a trusted proxy.
    """

    def __init__(self, trusted: bool = False) -> None:
        self.trusted = trusted
        self.filters = None
        self.proto = b"http"
        self.identity = None
        self.status: Optional[int] = None
        self.has_body = False
        self.fields: List[Tuple[bytes, bytes]] = []
        self.pieces: List[bytes] = []
        self.ended = False
        self.failure: Optional[Tuple[int, str]] = None
        self.interim: List[Tuple[int, List[Tuple[bytes, bytes]]]] = []

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def field(self, name: bytes) -> Optional[bytes]:
        """
        The value of the first response field named C{name} (any case).
        """
        name = name.lower()
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None

    def informational(self, x, resp) -> None:
        self.interim.append((resp.status, list(resp.headers)))

    def response_head(self, x, resp, has_body: bool, extra=None) -> None:
        x.status = self.status = resp.status
        self.has_body = has_body
        self.fields = list(resp.headers) + list(extra or ())
        if resp.content_length is not None:
            self.fields.append((b"Content-Length", b"%d" % resp.content_length))

    def response_body(self, x, data: bytes) -> None:
        self.pieces.append(data)

    def flush(self) -> None:
        pass

    def response_end(self, x) -> None:
        self.ended = True

    def upstream_failed(self, x, status: int, reason: str) -> None:
        x.status = status
        self.failure = (status, reason)


def make_exchange(
    method: str = "GET",
    target: str = "/",
    headers: Iterable[Tuple[str, str]] = (),
    client_address: str = "192.0.2.7",
    host: str = "example.com",
    trusted: bool = False,
):
    """
    A request as filters see it (an L{Exchange
    <twistproxy.http.exchange.Exchange>}), whose client is a
    L{RecordingSink} (C{x.downstream}).

    @param headers: (name, value) string pairs, in order.
    @param trusted: Whether the client is a trusted proxy.
    """
    from twistproxy.http.exchange import Exchange
    from twistproxy.http.parser import RequestHead

    fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    if not any(n.lower() == b"host" for n, _ in fields):
        fields.insert(0, (b"Host", host.encode("ascii")))
    req = RequestHead.made(method.encode("ascii"), target.encode("ascii"),
                           host.encode("ascii"), fields, keep_alive=True)
    return Exchange(req, client_address, RecordingSink(trusted), 0.0)


def run_filters(filters: Sequence[Any], x) -> bool:
    """
    Run C{filters} over C{x} as a listener or route would.

    @param filters: Filter objects (what factories' C{fromConfig} return).
    @return: Whether they let C{x} through.  When not, a filter answered
        (see C{x.downstream}), or one is still deciding (a L{Deferred} not
        fired yet): call L{run_filters} again when it has.
    """
    from twistproxy.filters.chain import FilterChain

    passed: List[Any] = []
    FilterChain(filters).run(x, passed.append)
    return bool(passed)


def send_response(x, status: int = 200, headers: Iterable[Tuple[str, str]] = (),
                  pieces: Iterable[bytes] = (), length: Optional[int] = None) -> None:
    """
    Answer C{x} as its backend would, through C{x.sink}, so that the
    response filters L{run_filters} installed see it; the result arrives in
    C{x.downstream} (a L{RecordingSink}).

    @param pieces: The body, in the pieces the backend sends.
    @param length: The response's C{Content-Length}, or C{None} for a
        chunked response.
    """
    from twistproxy.http.headers import own_head

    resp = own_head(status, b"Whatever",
                    [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers], length)
    resp.chunked = length is None
    pieces = list(pieces)
    has_body = x.request.method != b"HEAD" and status not in (204, 304)
    sink = x.sink
    sink.response_head(x, resp, has_body)
    for piece in pieces:
        sink.response_body(x, piece)
        sink.flush()
    sink.response_end(x)


class FilterContractMixin:
    """
    Tests every filter must pass, whatever its roles: a mixin for
    C{twisted.trial.unittest.SynchronousTestCase}.  Define C{makeFilter}::

        class MyFilterContractTests(FilterContractMixin, SynchronousTestCase):
            def makeFilter(self):
                return myFactory.fromConfig(Clock(), {"option": 1}, "test")
    """

    def makeFilter(self) -> Any:
        """
        Build the filter under test (with a fake clock as its reactor).
        """
        raise NotImplementedError(f"{type(self).__name__} must define makeFilter")

    def _roles(self, f) -> list:
        from twistproxy.interfaces import IConnectionFilter, IRequestFilter, IResponseFilter

        return [r for r in (IRequestFilter, IResponseFilter, IConnectionFilter)
                if r.providedBy(f)]

    def test_provides_its_roles(self) -> None:
        """
        The filter has at least one role and fully provides each.
        """
        f = self.makeFilter()
        roles = self._roles(f)
        self.assertTrue(roles, f"{f!r} provides no filter interface")  # type: ignore[attr-defined]
        for role in roles:
            verifyObject(role, f)

    def test_verdict(self) -> None:
        """
        A plain request gets a verdict of the allowed kinds: C{None}, an
        L{Answer <twistproxy.filters.Answer>}, or a Deferred.
        """
        from twisted.internet.defer import Deferred

        from twistproxy.filters import Answer
        from twistproxy.interfaces import IRequestFilter

        f = self.makeFilter()
        if IRequestFilter.providedBy(f):
            verdict = f.filter_request(make_exchange())
            self.assertIsInstance(  # type: ignore[attr-defined]
                verdict, (type(None), Answer, Deferred))

    def test_connection_verdict(self) -> None:
        """
        A connection filter's verdict on a new connection is C{True},
        C{False} or a Deferred, and an accepted connection can end.
        """
        from twisted.internet.defer import Deferred

        from twistproxy.interfaces import IConnectionFilter

        f = self.makeFilter()
        if IConnectionFilter.providedBy(f):
            verdict = f.connection_made("192.0.2.1")
            if not isinstance(verdict, Deferred):
                self.assertIn(verdict, (True, False))  # type: ignore[attr-defined]
            if verdict is True:
                f.connection_lost("192.0.2.1")

    def test_response_completes(self) -> None:
        """
        When the filter lets a request through, a backend's response
        reaches the client whole: its status, and its end.
        """
        x = make_exchange(headers=[("Accept-Encoding", "gzip")])
        if not run_filters([self.makeFilter()], x):
            return
        send_response(x, 200, [("Content-Type", "text/plain")], [b"hello", b" world"],
                      length=11)
        sink = x.downstream
        self.assertEqual((sink.status, sink.ended), (200, True))  # type: ignore[attr-defined]
        self.assertTrue(sink.body)  # type: ignore[attr-defined]


@implementer(ICacheStore)
class FakeCacheStore:
    """
    An L{ICacheStore} in a dict, with no size limit, on a given clock; for
    tests of code that uses a store.

    @ivar entries: key -> (entry, expiry time, tags).
    """

    def __init__(self, clock):
        self._clock = clock
        self.entries: dict = {}

    def get(self, key: bytes):
        from twisted.internet.defer import succeed

        item = self.entries.get(key)
        if item is None or item[1] <= self._clock.seconds():
            return succeed(None)
        return succeed(item[0])

    def put(self, key: bytes, entry, ttl: float, tags: Sequence[bytes] = ()):
        from twisted.internet.defer import succeed

        self.entries[key] = (entry, self._clock.seconds() + ttl, tuple(tags))
        return succeed(None)

    def delete(self, key: bytes):
        from twisted.internet.defer import succeed

        self.entries.pop(key, None)
        return succeed(None)

    def _remove(self, keys) -> Any:
        from twisted.internet.defer import succeed

        for key in keys:
            del self.entries[key]
        return succeed(len(keys))

    def purge(self, prefix: bytes):
        return self._remove([k for k in self.entries if k.startswith(prefix)])

    def purge_tag(self, tag: bytes):
        return self._remove([k for k, v in self.entries.items() if tag in v[2]])

    def close(self):
        from twisted.internet.defer import succeed

        return succeed(None)


class CacheStoreContractMixin:
    """
    Tests every L{ICacheStore} must pass.  Mix into a
    C{twisted.trial.unittest.TestCase} and define C{makeStore()} (which may
    return a L{Deferred}) and C{advance(seconds)}, which lets that much
    time pass for the store (a fake clock's C{advance}, or a real wait)
    and may return a L{Deferred}.
    """

    def _entry(self, body: bytes = b"hello", status: int = 200):
        from twistproxy.cache.entry import Entry

        return Entry(status, b"OK", [(b"Content-Type", b"text/plain"), (b"ETag", b'"x"')],
                     body, 100.0, 101.5, [b"accept-encoding"])

    def _store(self):
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(self.makeStore)

    def _steps(self, steps):
        from twisted.internet.defer import inlineCallbacks

        return inlineCallbacks(steps)()

    def test_interface(self):
        """
        The store provides L{ICacheStore}.
        """
        def steps():
            store = yield self._store()
            self.assertTrue(verifyObject(ICacheStore, store))
        return self._steps(steps)

    def test_round_trip(self):
        """
        What is put under a key comes back equal, binary key and all; other
        keys are misses.
        """
        def steps():
            store = yield self._store()
            key = b"http://a.example/x?y\x00\x01v=1"
            yield store.put(key, self._entry(b"\x00\xffbody"), 60)
            got = yield store.get(key)
            self.assertEqual(got, self._entry(b"\x00\xffbody"))
            self.assertEqual(got.vary, (b"accept-encoding",))
            self.assertEqual(got.response_time, 101.5)
            self.assertIsNone((yield store.get(b"http://a.example/x?y\x00")))
        return self._steps(steps)

    def test_replace(self):
        """
        A second put under a key replaces the first.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"k\x00", self._entry(b"one"), 60)
            yield store.put(b"k\x00", self._entry(b"two"), 60)
            self.assertEqual((yield store.get(b"k\x00")).body, b"two")
        return self._steps(steps)

    def test_expiry(self):
        """
        An entry is not returned once its time to live is over.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"short\x00", self._entry(), 0.2)
            yield store.put(b"long\x00", self._entry(), 60)
            yield self.advance(0.5)
            self.assertIsNone((yield store.get(b"short\x00")))
            self.assertIsNotNone((yield store.get(b"long\x00")))
        return self._steps(steps)

    def test_delete(self):
        """
        C{delete} removes exactly one key.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"a\x00", self._entry(), 60)
            yield store.put(b"a\x00b", self._entry(), 60)
            yield store.delete(b"a\x00")
            yield store.delete(b"missing\x00")
            self.assertIsNone((yield store.get(b"a\x00")))
            self.assertIsNotNone((yield store.get(b"a\x00b")))
        return self._steps(steps)

    def test_purge_prefix(self):
        """
        C{purge} removes the keys that start with the prefix, glob
        characters taken literally, and says how many.
        """
        def steps():
            store = yield self._store()
            for key in [b"http://a/s/1\x00", b"http://a/s/2\x00x", b"http://a/t\x00",
                        b"http://a/[*]\x00", b"http://a/[x]\x00"]:
                yield store.put(key, self._entry(), 60)
            self.assertEqual((yield store.purge(b"http://a/s/")), 2)
            self.assertEqual((yield store.purge(b"http://a/[*]")), 1)
            self.assertIsNone((yield store.get(b"http://a/s/1\x00")))
            self.assertIsNotNone((yield store.get(b"http://a/t\x00")))
            self.assertIsNotNone((yield store.get(b"http://a/[x]\x00")))
        return self._steps(steps)

    def test_purge_tag(self):
        """
        C{purge_tag} removes the entries put with the tag, and no others.
        """
        def steps():
            store = yield self._store()
            yield store.put(b"1\x00", self._entry(), 60, [b"p1", b"all"])
            yield store.put(b"2\x00", self._entry(), 60, [b"p2", b"all"])
            yield store.put(b"3\x00", self._entry(), 60)
            self.assertEqual((yield store.purge_tag(b"p1")), 1)
            self.assertIsNone((yield store.get(b"1\x00")))
            self.assertEqual((yield store.purge_tag(b"all")), 1)
            self.assertIsNone((yield store.get(b"2\x00")))
            self.assertIsNotNone((yield store.get(b"3\x00")))
            self.assertEqual((yield store.purge_tag(b"none")), 0)
        return self._steps(steps)
