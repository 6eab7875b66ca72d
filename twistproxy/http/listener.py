# -*- test-case-name: tests.test_proxy -*-
"""
A listener of HTTP clients: the factory that builds each connection's codec.

L{HTTPServerFactory} stands for one listening port.  It admits
connections (a L{Quota} beyond which it refuses them, L{twistproxy.admission})
and gives each the codec it speaks: HTTP/1.1 (L{twistproxy.http.server}),
or, where clients may choose HTTP/2, a L{Negotiating} stand-in that picks
HTTP/1.1 or HTTP/2 from the first bytes.  It holds what the connections of
a listener share (timeouts, limits, trusted proxies, the forwarder, the
deadlines), drains them on shutdown and hands each finished exchange to the
access log.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from twistproxy.admission import Emptied, Quota, Refused, quotas
from twistproxy.config import Limits, Timeouts
from twistproxy.deadlines import Deadlines
from twistproxy.http.exchange import Exchange
from twistproxy.http.negotiate import Negotiating
from twistproxy.http.parser import UNPARSED
from twistproxy.http.paths import KEEP
from twistproxy.http.server import HTTPServerProtocol
from twistproxy.net import TrustedProxies


class _Refused(Refused):
    """
    A connection refused at the connection limit: closed at once, and
    logged as a request the proxy could not read, with 503
    C{max_connections}.
    """

    def __init__(self, factory: HTTPServerFactory):
        self._factory = factory

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        exchange = Exchange(UNPARSED, getattr(peer, "host", "") or "", self, factory.reactor.seconds())
        exchange.status, exchange.reason = 503, "max_connections"
        super().connectionMade()
        factory.exchange_ended(exchange)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """
    What one listener's L{HTTPServerFactory} is set to, built from the
    configuration by L{twistproxy.build}.

    @ivar timeouts: The L{Timeouts} of every wait.
    @ivar limits: The L{Limits} on heads, bodies, connections and requests.
    @ivar trusted_proxies: The networks whose C{Forwarded} fields are
        believed, as configuration strings.
    @ivar via: The proxy's name in C{Via}.
    @ivar scheme: How clients reach this listener, C{b'http'} or
        C{b'https'}, as told to backends in C{X-Forwarded-Proto}.
    @ivar redirect_port: When set, every request is answered with a 308
        redirect to https on this port instead of being forwarded.
    @ivar hsts: The C{max-age} of the C{Strict-Transport-Security} field
        added to responses, or C{0} for none.
    @ivar identity_header: The request field carrying the verified TLS
        client subject to backends (stripped from what clients send), or
        C{None}.
    @ivar http2: Whether clients may choose HTTP/2 by ALPN (TLS listeners).
    @ivar h2c: Whether a plain connection opening with the HTTP/2 preface
        speaks HTTP/2 (prior knowledge).
    @ivar escaped_slashes: What C{%2F} and C{%5C} in a request path do,
        one of L{twistproxy.config.ESCAPED_SLASHES}.
    @ivar listener: The name of the listener, for routes that match on
        it, or C{''} (a factory several listeners share: no route does).
    """

    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    trusted_proxies: Tuple[str, ...] = ()
    via: str = "twistproxy"
    scheme: bytes = b"http"
    redirect_port: Optional[int] = None
    hsts: int = 0
    identity_header: Optional[str] = None
    http2: bool = False
    h2c: bool = False
    escaped_slashes: str = KEEP
    listener: str = ""


class HTTPServerFactory(Factory):
    """
    Builds L{HTTPServerProtocol}s for one listener.

    Its L{ServerSettings} are unpacked into attributes of the same names,
    which the protocols read (so a new setting needs no line here): C{hsts}
    as the field to add, C{identity_header} and C{via} as bytes,
    C{trusted_proxies} as a L{TrustedProxies
    <twistproxy.net.TrustedProxies>}.

    @ivar forwarder: Decides where each request goes; has
        C{forward(exchange)} and C{cancel(exchange)}.
    @ivar on_exchange_end: Called with each finished L{Exchange} (the access
        log), or C{None}.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>}, or C{None}.
    @ivar challenges: The ACME HTTP-01 answers to serve before routing
        (L{twistproxy.acme.challenges.Challenges}), or C{None}.
    """

    protocol = HTTPServerProtocol
    challenges = None
    # One log line per listener start is plenty; the access log says the rest.
    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        forwarder,
        settings: ServerSettings = ServerSettings(),
        on_exchange_end=None,
        peer_identity=None,
        filters=None,
        connections: Optional[Quota] = None,
        in_flight: Optional[Quota] = None,
    ):
        """
        @param peer_identity: Finds the verified TLS client subject of a
            transport, for C{settings.identity_header}.
        @param connections: The quota of this listener's connections; by
            default one of C{settings.limits}.
        @param in_flight: The quota of requests in flight; by default one of
            C{settings.limits}.
        """
        self.reactor = reactor
        for field in dataclasses.fields(settings):
            setattr(self, field.name, getattr(settings, field.name))
        # What the protocols read, in the form they use it.
        self.hsts = (
            (b"Strict-Transport-Security", b"max-age=%d" % settings.hsts) if settings.hsts
            else None)
        identity = settings.identity_header
        self.identity_header = identity.encode("ascii") if identity else None
        self.trusted_proxies = TrustedProxies(settings.trusted_proxies)
        self.via = settings.via.encode("ascii")
        self.filters = filters
        if connections is None or in_flight is None:
            own = quotas(settings.limits, reactor)
            connections = connections or own[0]
            in_flight = in_flight or own[1]
        self.quota = connections
        self.in_flight = in_flight
        self.connections: set = set()
        self.draining = False
        self._emptied = Emptied(self.connections)
        self.peer_identity = peer_identity
        self.deadlines = Deadlines(reactor)
        self.forwarder = forwarder
        self._on_exchange_end = on_exchange_end

    def buildProtocol(self, addr):
        if not self.quota.acquire():
            return _Refused(self)
        if self.http2 or self.h2c:
            protocol = Negotiating(self)
        else:
            protocol = HTTPServerProtocol(self)
        protocol.admitted = True
        return protocol

    def configure(self, config, forwarder) -> None:
        """
        Serve new requests with a reloaded configuration.
        """
        self.forwarder = forwarder
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.trusted_proxies = TrustedProxies(config.forwarding.trusted_proxies)
        self.via = config.forwarding.via.encode("ascii")

    def drain(self):
        """
        Graceful shutdown of this factory's connections: idle ones close at
        once, busy ones after their current response (HTTP/1.1) or streams
        (HTTP/2).

        @return: A Deferred that fires when the last connection has closed.
        """
        self.draining = True
        for protocol in list(self.connections):
            protocol.drain()
        return self._emptied.wait()

    def abort_all(self) -> None:
        """
        Cut every connection now (the drain time is over).
        """
        for protocol in list(self.connections):
            protocol.transport.abortConnection()

    def connection_closed(self, protocol) -> None:
        if protocol.admitted:
            protocol.admitted = False
            self.quota.release()
        stall = getattr(protocol, "_stall", None)
        if stall is not None:
            self.deadlines.discard(stall)
            protocol._stall = None
        self.connections.discard(protocol)
        if protocol.counted:
            protocol.counted = False
            protocol.filters.connection_lost(protocol.client_address)
        self._emptied.check()

    def exchange_ended(self, exchange: Exchange) -> None:
        if exchange.admitted:
            exchange.admitted = False
            self.in_flight.release()
        self.forwarder.release(exchange)
        if self._on_exchange_end is not None:
            self._on_exchange_end(exchange)
