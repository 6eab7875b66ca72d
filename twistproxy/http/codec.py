# -*- test-case-name: tests.test_proxy -*-
"""
What the client-side codecs share.

The HTTP/1.1 codec (L{twistproxy.http.server}) and the HTTP/2 one
(L{twistproxy.http.h2}) both speak to clients for a listener's factory
(L{twistproxy.http.listener}): L{ClientCodec} holds what they have in
common, who the client is, whether it is a trusted proxy, its TLS
identity, the connection and request quotas, the send timeout of a
client that does not read, and the ACME HTTP-01 answers.  Both codecs import it; it imports neither.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from twistproxy.deadlines import Waiting
from twistproxy.flow import FullRelay, lose_now, no_delay
from twistproxy.http.answers import Answer, respond
from twistproxy.http.exchange import Exchange


class _SendStall:
    """
    A member of the factory's L{Deadlines} while a client's send buffer is
    full: a second wait beside the connection's own, which it may outlast
    (a response stuck behind a client that does not read).
    """

    __slots__ = ("deadline", "_codec")

    def __init__(self, codec: ClientCodec, deadline: float):
        self._codec = codec
        self.deadline = deadline

    def expired(self) -> None:
        self._codec._send_timed_out()


class ClientCodec(Waiting, Protocol):
    """
    What the HTTP/1.1 and HTTP/2 client-side codecs share: who the client
    is, whether it is a trusted proxy, its verified TLS identity, and
    pausing the backends while the client cannot take more.

    @ivar _factory: The listener's L{HTTPServerFactory
        <twistproxy.http.listener.HTTPServerFactory>}.
    @ivar client_address: The peer's IP address (C{''} for a UNIX socket).
    @ivar trusted: Whether the peer is a trusted proxy.
    @ivar proto: How the client reached the listener, C{b'http'} or
        C{b'https'}.
    @ivar identity: C{(field name, verified client certificate subject or
        None)} once known, on listeners that pass it to backends.
    @ivar client_full: Whether the client's send buffer is full.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>}, or C{None}.
    @ivar listener: The listener's name, when a route matches on it
        (else C{''}).
    @ivar counted: Whether the listener's connection filters accepted
        this connection (and must be told when it closes).
    @ivar admitted: Whether this connection holds a place in its factory's
        connection quota (given back when it closes).
    """

    log = Logger()
    admitted = False
    _stall: Optional[_SendStall] = None

    @property
    def connection(self) -> "ClientCodec":
        """
        The client connection (an HTTP/2 stream answers its connection).
        """
        return self

    def __init__(self, factory):
        self._factory = factory
        self._clock = factory.reactor
        self.client_full = False
        self.client_address = ""
        self.trusted = False
        self.proto = factory.scheme
        self.identity = None
        self._relaying = False
        self.filters = factory.filters
        self.listener = factory.listener
        self.counted = False
        # Requests received on this connection so far.
        self.requests = 0

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        self.client_address = getattr(peer, "host", "") or ""
        trusted_proxies = factory.trusted_proxies
        # No address to parse when no proxy is trusted (the default).
        self.trusted = bool(trusted_proxies) and self.client_address in trusted_proxies
        self.transport.registerProducer(FullRelay(self._send_full), True)
        self._relaying = True
        no_delay(self.transport)
        factory.connections.add(self)
        filters = self.filters
        if filters is not None and filters.connection_filters:
            if not filters.connection_made(self.client_address):
                self.transport.abortConnection()
                return
            self.counted = True
        if factory.draining:
            self.drain()

    def _identify(self) -> None:
        """
        Learn the client's TLS identity, once: the handshake is over by the
        first request.
        """
        factory = self._factory
        if factory.identity_header is not None and self.identity is None:
            subject = factory.peer_identity(self.transport)
            self.identity = (
                factory.identity_header,
                subject.encode("utf-8") if subject is not None else None,
            )

    def close(self) -> None:
        """
        Close the connection once what was written has been sent.

        The relay registered when the connection was made goes first: a TLS
        transport sends its close_notify, and so closes at all, only once
        no producer is registered.
        """
        if self._relaying:
            self._relaying = False
            self.transport.unregisterProducer()
        lose_now(self.transport)

    def _send_full(self, full: bool) -> None:
        """
        The client's send buffer filled up, or drained: start or stop the
        send timeout, then pause or resume what feeds it.
        """
        deadlines = self._factory.deadlines
        if full and self._stall is None:
            self._stall = _SendStall(
                self, self._clock.seconds() + self._factory.timeouts.send)
            deadlines.add(self._stall)
        elif not full and self._stall is not None:
            deadlines.discard(self._stall)
            self._stall = None
        self._client_full(full)

    def _send_timed_out(self) -> None:
        """
        The client has not taken what the proxy sends for
        C{timeouts.send}: cut the connection (closing it gracefully would
        wait for the same full buffer to drain).
        """
        self._stall = None
        self.log.debug("client {client} does not read: connection cut",
                       client=self.client_address)
        self._send_stalled()
        self.transport.abortConnection()

    def _answered_challenge(self, exchange: Exchange) -> bool:
        """
        Answer an ACME CA fetching an HTTP-01 answer the factory's
        C{challenges} holds, before any redirect, quota or route.

        @return: Whether C{exchange} was that, and is answered.
        """
        challenges = self._factory.challenges
        answer = None if challenges is None else challenges.answer(exchange.request.path)
        if answer is None:
            return False
        respond(exchange, Answer(200, (), answer, "acme_challenge"))
        return True

    def _allowed(self, exchange: Exchange) -> bool:
        """
        Count a new request against the connection's and the proxy's
        limits.

        @return: Whether it may be forwarded; if not, the caller answers
            503 (the proxy has too many requests in flight).
        """
        factory = self._factory
        self.requests += 1
        limit = factory.limits.max_requests_per_connection
        if limit and self.requests >= limit:
            self._last_request(exchange)
        if factory.in_flight.acquire():
            exchange.admitted = True
            return True
        exchange.reason = "overloaded"
        return False

    def _client_full(self, full: bool) -> None:
        raise NotImplementedError()

    def _send_stalled(self) -> None:
        raise NotImplementedError()

    def _last_request(self, exchange: Exchange) -> None:
        raise NotImplementedError()

    def drain(self) -> None:
        raise NotImplementedError()
