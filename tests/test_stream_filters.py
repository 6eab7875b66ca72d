"""
Tests for the filters of C{tcp} and C{udp} listeners: which are allowed,
and how they judge each new connection or session by the client's
address (L{twistproxy.filters.chain.FilterChain.admit},
L{twistproxy.stream.tcp}, L{twistproxy.stream.udp}).
"""

from __future__ import annotations

import io
import os

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.test_stream_sni import client_hello
from tests.test_stream_tcp import Peer, RelayHarness, config
from tests.test_stream_udp import UDPReactor
from tests.test_stream_udp import config as udp_config
from twistproxy.accesslog import AccessLogWriter
from twistproxy.admission import Quota
from twistproxy.config import ConfigError, Filter, parse
from twistproxy.filters.chain import FilterChain, build_chain
from twistproxy.filters.ratelimit import RateLimitFactory, RedisBuckets
from twistproxy.build import make_group
from twistproxy.interfaces import IConnectionFilter, IFilterFactory
from twistproxy.service import ProxyService
from twistproxy.proxyproto import ProxyHeaderFactory, encode
from twistproxy.stream.udp import PENDING_DATAGRAMS, UDPProxy
from twistproxy.testing import issue_certificate, pem_bundle


@implementer(IConnectionFilter)
class LaterFilter:
    """
    A plugin's connection filter that answers with a Deferred, and records
    what it is told.
    """

    def __init__(self):
        self.pending = []
        self.lost = []

    def connection_made(self, address):
        d = Deferred()
        self.pending.append((address, d))
        return d

    def connection_lost(self, address):
        self.lost.append(address)


@implementer(IFilterFactory)
class LaterFactory:
    name = "later"
    help = "Answers later."

    def fromConfig(self, reactor, options, path):
        return LaterFilter()


later = LaterFactory()
LATER = "tests.test_stream_filters.later"


def chain(reactor, *filters, stream="tcp"):
    return build_chain(reactor, [Filter(name, options) for name, options in filters],
                       "listeners.db.filters", connections=True, stream=stream)


TCP_LISTENER = """
[access_log]
path = ""

[listeners.db]
endpoint = "{scheme}:5433"
protocol = "{protocol}"
upstream = "pg"
filters = [{filters}]

[upstreams.pg]
servers = ["{scheme}://10.0.0.1:5432"]
"""


class ConfigTests(SynchronousTestCase):
    """
    Which filters a tcp or udp listener takes: those that judge a
    connection by the client's address alone.
    """

    def service(self, filters, protocol="tcp"):
        scheme = "udp" if protocol == "udp" else "tcp"
        return ProxyService(parse(TCP_LISTENER.format(
            protocol=protocol, filters=filters, scheme=scheme)), MemoryReactorClock())

    def test_connection_filters_allowed(self):
        """
        C{access}, C{rate_limit} (keyed on the client), C{connection_limit}
        and a plugin's connection filter are taken on tcp and udp
        listeners, in order, all asked about each connection.
        """
        for protocol in ("tcp", "udp"):
            service = self.service(
                '{ name = "access", deny = ["10.0.0.0/8"] }, { name = "rate_limit", rate = 5 }, '
                f'{{ name = "connection_limit", max = 3 }}, {{ name = "{LATER}" }}', protocol)
            (filters,) = service.built.filter_chains
            self.assertEqual(len(filters.connection_filters), 4)

    def test_request_filters_refused(self):
        """
        A filter that only judges HTTP requests or responses is refused on
        a tcp or udp listener, naming its place and saying why.
        """
        for protocol in ("tcp", "udp"):
            for text in ('{ name = "block", methods = ["TRACE"] }',
                         '{ name = "headers", hide_banners = true }',
                         '{ name = "cors", origins = ["*"] }',
                         '{ name = "compress" }'):
                with self.assertRaises(ConfigError) as e:
                    self.service('{ name = "access", deny = ["10.0.0.0/8"] }, ' + text, protocol)
                self.assertEqual(e.exception.path, "listeners.db.filters[1]")
                self.assertIn(f"a {protocol} listener has none", e.exception.problem)

    def test_rate_limit_by_header_refused(self):
        """
        A rate limit keyed on anything but the client cannot judge a
        connection: refused on a tcp listener (still fine on HTTP).
        """
        with self.assertRaises(ConfigError) as e:
            self.service('{ name = "rate_limit", rate = 5, key = ["header:X-Key"] }')
        self.assertEqual(e.exception.path, "listeners.db.filters[0]")
        self.assertTrue(build_chain(None, [Filter("rate_limit", {"rate": 5, "key": ["host"]})],
                                    "routes[0].filters"))

    def test_http_listener_unchanged(self):
        """
        On an HTTP listener C{access} and C{rate_limit} judge requests
        only, not connections (a trusted proxy's clients are told apart
        per request); C{connection_limit} judges connections; C{access}
        is still allowed on routes, C{connection_limit} is not.
        """
        filters = build_chain(
            MemoryReactorClock(),
            [Filter("access", {"deny": ["10.0.0.0/8"]}), Filter("rate_limit", {"rate": 1}),
             Filter("connection_limit", {"max": 1})],
            "listeners.web.filters", connections=True)
        self.assertEqual([type(f).__name__ for f in filters.connection_filters],
                         ["ConnectionLimit"])
        self.assertTrue(filters.connection_made("10.1.2.3"))
        self.assertTrue(build_chain(None, [Filter("access", {"deny": ["10.0.0.0/8"]})],
                                    "routes[0].filters"))
        with self.assertRaises(ConfigError):
            build_chain(None, [Filter("connection_limit", {"max": 1})], "routes[0].filters")

    def test_tcp_counts_against_global_quota(self):
        """
        A tcp listener's relays count against C{limits.max_connections},
        and its port is paused while that quota is full.
        """
        service = self.service('{ name = "access", deny = ["10.0.0.0/8"] }')
        listener = service.listeners["db"]
        self.assertIs(listener.quota, service.connections)
        self.assertIs(listener.factory.quota, service.connections)


def _closed_after_hello(factory, clients) -> list:
    """
    Whether a connection from each of C{clients} to C{factory} was closed
    once its ClientHello asked for C{a.test}.
    """
    closed = []
    for host in clients:
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 1000))
        peer = Peer(protocol, host, 1000)
        protocol.dataReceived(client_hello(b"a.test"))
        closed.append(peer.transport.disconnecting)
    return closed


class ServiceWiringTests(SynchronousTestCase):
    """
    A whole L{ProxyService} hands a tcp or udp listener's filters to what
    relays its connections.
    """

    def test_tcp_behind_sni(self):
        """
        On a tcp listener with passthrough routes, a denied client is
        closed once its ClientHello named the route, before any backend
        connection; the filters see the real client address.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(parse(TCP_LISTENER.format(
            protocol="tcp", scheme="tcp",
            filters='{ name = "access", deny = ["192.0.2.0/24"] }').replace(
                'upstream = "pg"', 'upstream = "pg"\nsni = [{ hosts = ["a.test"], upstream = "pg" }]')),
            reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (port,) = [p for p in reactor.tcpServers if p[0] == 5433]
        self.assertEqual(_closed_after_hello(port[1], ["192.0.2.7", "198.51.100.1"]),
                         [True, False])
        self.assertEqual(len(reactor.tcpClients), 1)

    def test_passthrough_on_http_listener(self):
        """
        On an HTTP listener with TLS and passthrough routes, the listener's
        connection filters (here C{access}, which judges requests on the
        terminated names) also judge the connections it passes through: a
        denied client gets no backend connection for a passed-through
        name.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        pem = os.path.join(directory, "site.pem")
        with open(pem, "wb") as f:
            f.write(pem_bundle(issue_certificate("web.test", ["web.test"])))
        reactor = MemoryReactorClock()
        service = ProxyService(parse(f"""
[access_log]
path = ""

[listeners.web]
endpoint = "tcp:8443"
tls = {{ certificates = ["{pem}"] }}
sni = [{{ hosts = ["a.test"], upstream = "pg" }}]
filters = [{{ name = "access", deny = ["192.0.2.0/24"] }}]

[upstreams.pg]
servers = ["tcp://10.0.0.1:5432"]

[upstreams.app]
servers = ["http://10.0.0.2:8000"]

[[routes]]
upstream = "app"
"""), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (port,) = [p for p in reactor.tcpServers if p[0] == 8443]
        self.assertEqual(_closed_after_hello(port[1], ["192.0.2.7", "198.51.100.1"]),
                         [True, False])
        self.assertEqual([c[:2] for c in reactor.tcpClients], [("10.0.0.1", 5432)])

    def test_udp(self):
        """
        A udp listener's filters judge its new sessions.
        """
        reactor = UDPReactor()
        service = ProxyService(parse(TCP_LISTENER.format(
            protocol="udp", scheme="udp",
            filters='{ name = "access", deny = ["192.0.2.0/24"] }')), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        proxy = reactor.udp_ports[0].protocol
        proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"q", ("198.51.100.1", 1000))
        self.assertEqual((list(proxy.sessions), proxy.refused),
                         ([("198.51.100.1", 1000)], 1))


class TCPFilterTests(SynchronousTestCase):
    """
    A tcp listener's filters judge each connection before a backend is
    picked.
    """

    def harness(self, *filters, cfg=None):
        h = RelayHarness(cfg or config())
        h.factory.filters = chain(h.reactor, *filters)
        return h

    def log_line(self, h) -> bytes:
        stream = io.BytesIO()
        AccessLogWriter(stream, "combined", h.reactor).connection(h.ended[-1])
        return stream.getvalue()

    def test_access_denied(self):
        """
        A client in a deny list is closed without a backend connection,
        logged 403 C{access_denied}; an allowed one is relayed.
        """
        h = self.harness(("access", {"deny": ["192.0.2.0/24"]}))
        denied = h.client("192.0.2.7")
        self.assertTrue(denied.transport.disconnecting)
        self.assertEqual(h.attempts(), [])
        denied.close()
        self.assertIn(b'"TCP db" 403 0 received=0 upstream=- server_name=- ', self.log_line(h))
        self.assertTrue(self.log_line(h).endswith(b"reason=access_denied\n"))
        allowed = h.client("198.51.100.1")
        self.assertFalse(allowed.transport.disconnecting)
        self.assertEqual(h.attempts(), [("127.0.0.1", 5432)])

    def test_rate_limit(self):
        """
        A rate limit counts new connections per client address: beyond
        its burst, a connection is refused (429 C{rate_limited}) until the
        rate allows one again; other addresses are not affected.
        """
        h = self.harness(("rate_limit", {"rate": 1, "burst": 2}))
        first, second, third = (h.client("192.0.2.7", 40000 + i) for i in range(3))
        other = h.client("192.0.2.8")
        self.assertEqual([p.transport.disconnecting for p in (first, second, third, other)],
                         [False, False, True, False])
        third.close()
        self.assertEqual((h.ended[-1].status, h.ended[-1].reason), (429, "rate_limited"))
        h.reactor.advance(1)
        self.assertFalse(h.client("192.0.2.7", 40010).transport.disconnecting)

    def test_connection_limit(self):
        """
        A connection limit caps the connections one address holds open
        (503 C{connection_limit} beyond); the end of one makes room.
        """
        h = self.harness(("connection_limit", {"max": 1}))
        first = h.client()
        second = h.client(port=40001)
        self.assertTrue(second.transport.disconnecting)
        second.close()
        self.assertEqual((h.ended[-1].status, h.ended[-1].reason), (503, "connection_limit"))
        h.accept().close()
        first.close()
        self.assertFalse(h.client(port=40002).transport.disconnecting)

    def test_refusal_undoes_earlier_filters(self):
        """
        When a later filter refuses, the earlier ones that accepted are
        told the connection is over (the connection limit is not held).
        """
        h = self.harness(("connection_limit", {"max": 1}),
                         ("access", {"deny": ["192.0.2.7/32"]}))
        h.client("192.0.2.7").close()
        h.client("192.0.2.7", 40001).close()
        limit = h.factory.filters.connection_filters[0]
        self.assertEqual(limit._open, {})

    def test_behind_proxy_header(self):
        """
        Behind a trusted PROXY header, the address it gives is judged, not
        the peer's.
        """
        h = self.harness(("access", {"allow": ["203.0.113.0/24"]}))
        wrapped = ProxyHeaderFactory(h.factory, lambda host: host == "10.9.9.9", h.reactor, 5)
        results = []
        for source in ("203.0.113.5", "192.0.2.7"):
            protocol = wrapped.buildProtocol(IPv4Address("TCP", "10.9.9.9", 1000))
            peer = Peer(protocol, "10.9.9.9", 1000)
            protocol.dataReceived(encode("v1", (source, 1234), ("10.0.0.1", 5433)))
            results.append(peer.transport.disconnecting)
        self.assertEqual(results, [False, True])
        self.assertEqual(len(h.attempts()), 1)

    def test_waits_for_later_verdict(self):
        """
        While a filter's verdict is a Deferred, the client is not read and
        no backend is connected to; an accepting verdict starts the relay,
        and the filter is told when it ends.
        """
        h = self.harness((LATER, {}))
        client = h.client()
        (f,) = h.factory.filters.connection_filters
        self.assertEqual(client.transport.producerState, "paused")
        self.assertEqual(h.attempts(), [])
        f.pending[0][1].callback(True)
        self.assertEqual(h.attempts(), [("127.0.0.1", 5432)])
        backend = h.accept()
        self.assertEqual(client.transport.producerState, "producing")
        backend.close()
        client.close()
        self.assertEqual(f.lost, ["192.0.2.7"])

    def test_later_refusal(self):
        """
        A refusing Deferred verdict closes the connection, no backend
        connected, and the filter is not told of its end.
        """
        h = self.harness((LATER, {}))
        client = h.client()
        (f,) = h.factory.filters.connection_filters
        f.pending[0][1].callback(False)
        self.assertTrue(client.transport.disconnecting)
        client.close()
        self.assertEqual((h.attempts(), f.lost), ([], []))
        self.assertEqual((h.ended[0].status, h.ended[0].reason), (403, "connection_refused"))

    def test_verdict_timeout(self):
        """
        Without a verdict in C{timeouts.connect} seconds the connection is
        closed (503 C{filter_timeout}); a late accepting verdict is given
        back to the filters.
        """
        h = self.harness((LATER, {}))
        client = h.client()
        (f,) = h.factory.filters.connection_filters
        h.reactor.advance(4)
        self.assertFalse(client.transport.disconnecting)
        h.reactor.advance(1.5)
        self.assertTrue(client.transport.disconnecting)
        client.close()
        self.assertEqual((h.ended[0].status, h.ended[0].reason), (503, "filter_timeout"))
        f.pending[0][1].callback(True)
        self.assertEqual((h.attempts(), f.lost), ([], ["192.0.2.7"]))

    def test_client_gone_while_judged(self):
        """
        A client that leaves while judged is logged once; a late accepting
        verdict connects to no backend and is given back.
        """
        h = self.harness((LATER, {}))
        client = h.client()
        (f,) = h.factory.filters.connection_filters
        client.close()
        self.assertEqual(len(h.ended), 1)
        f.pending[0][1].callback(True)
        self.assertEqual((h.attempts(), f.lost), ([], ["192.0.2.7"]))

    def test_failing_filter_refuses(self):
        """
        A filter whose verdict fails refuses the connection (500
        C{filter_failed}) and the failure is logged.
        """
        h = self.harness((LATER, {}))
        client = h.client()
        (f,) = h.factory.filters.connection_filters
        f.pending[0][1].errback(RuntimeError("boom"))
        self.assertTrue(client.transport.disconnecting)
        client.close()
        self.assertEqual((h.ended[0].status, h.ended[0].reason), (500, "filter_failed"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_redis_rate_limit_waits(self):
        """
        A rate limit counted in Redis holds the connection until Redis
        answers; when it does not in C{redis_timeout} seconds, the
        process's own count decides.
        """
        h = RelayHarness(config())
        f = RateLimitFactory().fromConfig(
            h.reactor, {"rate": 1, "redis": "redis://127.0.0.1:1", "redis_timeout": 0.5},
            "listeners.db.filters[0]")
        self.assertIsInstance(f._buckets, RedisBuckets)
        answers = []

        class Pool:
            def eval(self, script, keys, args):
                answers.append((keys, Deferred()))
                return answers[-1][1]

        f._buckets._redis._pool = Pool()
        h.factory.filters = FilterChain([f], streams=True)
        first = h.client()
        self.assertEqual((h.attempts(), answers[0][0]),
                         ([], ["twistproxy:ratelimit:listeners.db.filters[0]:192.0.2.7"]))
        answers[0][1].callback([1, "0", "1"])
        self.assertEqual(len(h.attempts()), 1)
        second = h.client(port=40001)
        h.reactor.advance(0.6)
        self.assertEqual(len(h.attempts()), 2)
        third = h.client(port=40002)
        h.reactor.advance(0.6)
        self.assertTrue(third.transport.disconnecting)
        self.assertFalse(first.transport.disconnecting or second.transport.disconnecting)
        self.flushLoggedErrors()

    def test_global_quota(self):
        """
        Every relay holds a place in the factory's quota, given back when
        it ends; a connection beyond it is closed at once, without a
        backend connection, and logged (503 C{max_connections}).
        """
        h = RelayHarness(config())
        h.factory.quota = quota = Quota("client connections", 1, h.reactor)
        client = h.client()
        self.assertEqual(quota.count, 1)
        refused = h.client(port=40001)
        self.assertTrue(refused.transport.disconnecting)
        refused.close()
        [ended] = h.ended
        self.assertEqual((ended.client_address, ended.status, ended.reason),
                         ("192.0.2.7", 503, "max_connections"))
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertEqual(quota.count, 1)
        h.accept().close()
        client.close()
        self.assertEqual(quota.count, 0)
        self.assertIsNotNone(h.client(port=40002))


class UDPFilterTests(SynchronousTestCase):
    """
    A udp listener's filters judge each new session.
    """

    def proxy(self, *filters, max_sessions=3):
        cfg = udp_config(max_sessions=max_sessions)
        self.reactor = UDPReactor()
        self.group = make_group(self.reactor, cfg.upstreams["resolvers"], cfg.timeouts)
        self.ended = []
        listener = cfg.listeners[0]
        proxy = UDPProxy(self.reactor, listener.name, listener.upstream,
                         {"resolvers": self.group}, cfg.timeouts, listener.max_sessions,
                         on_end=self.ended.append,
                         filters=chain(self.reactor, *filters, stream="udp"))
        self.reactor.listenUDP(5353, proxy)
        return proxy

    def test_access_denied(self):
        """
        A denied client gets no session: its datagrams are dropped and
        counted as refused; an allowed client's session is opened.
        """
        proxy = self.proxy(("access", {"deny": ["192.0.2.0/24"]}))
        proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"q", ("198.51.100.2", 1000))
        self.assertEqual(list(proxy.sessions), [("198.51.100.2", 1000)])
        self.assertEqual((proxy.refused, proxy.dropped), (2, 2))
        self.assertEqual(len(self.reactor.udp_ports), 2)

    def test_sessions_per_address(self):
        """
        A connection limit caps the sessions of one address (its ports);
        the end of one, on the clock, makes room; a rate limit counts new
        sessions, not datagrams.
        """
        proxy = self.proxy(("connection_limit", {"max": 1}),
                           ("rate_limit", {"rate": 1, "burst": 5}))
        proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"q", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"q", ("192.0.2.1", 1001))
        self.assertEqual(list(proxy.sessions), [("192.0.2.1", 1000)])
        self.assertEqual(proxy.refused, 1)
        self.reactor.advance(11)
        self.assertEqual(len(self.ended), 1)
        proxy.datagramReceived(b"q", ("192.0.2.1", 1001))
        self.assertEqual(list(proxy.sessions), [("192.0.2.1", 1001)])

    def test_datagrams_wait_for_later_verdict(self):
        """
        While a filter's verdict is a Deferred, at most
        C{PENDING_DATAGRAMS} of the client's datagrams wait (the others are
        dropped); an accepting verdict sends them in order through a new
        session, and the filter is told when the session ends.
        """
        proxy = self.proxy((LATER, {}))
        (f,) = proxy.filters.connection_filters
        client = ("192.0.2.1", 1000)
        for i in range(PENDING_DATAGRAMS + 2):
            proxy.datagramReceived(b"q%d" % i, client)
        self.assertEqual((len(f.pending), proxy.sessions, proxy.dropped), (1, {}, 2))
        f.pending[0][1].callback(True)
        self.assertEqual(proxy.sessions[client].port.written,
                         [(b"q%d" % i, None) for i in range(PENDING_DATAGRAMS)])
        self.reactor.advance(11)
        self.assertEqual(f.lost, ["192.0.2.1"])

    def test_later_refusal_and_timeout(self):
        """
        A refusing verdict drops what waited (counted as refused); no
        verdict within C{timeouts.connect} drops it too, and a late
        accepting verdict is given back to the filter.
        """
        proxy = self.proxy((LATER, {}))
        (f,) = proxy.filters.connection_filters
        proxy.datagramReceived(b"a", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"b", ("192.0.2.2", 1000))
        f.pending[0][1].callback(False)
        self.assertEqual((proxy.refused, proxy.dropped), (1, 1))
        self.reactor.advance(5.5)
        self.assertEqual(proxy.dropped, 2)
        f.pending[1][1].callback(True)
        self.assertEqual((proxy.sessions, f.lost), ({}, ["192.0.2.2"]))

    def test_judged_count_against_max_sessions(self):
        """
        Clients being judged count against C{max_sessions}: a further new
        client is dropped without asking the filters.
        """
        proxy = self.proxy((LATER, {}), max_sessions=1)
        (f,) = proxy.filters.connection_filters
        proxy.datagramReceived(b"a", ("192.0.2.1", 1000))
        proxy.datagramReceived(b"b", ("192.0.2.2", 1000))
        self.assertEqual((len(f.pending), proxy.dropped), (1, 1))
