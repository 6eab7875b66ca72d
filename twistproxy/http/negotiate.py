# -*- test-case-name: tests.test_negotiate -*-
"""
Choosing the codec of a client connection: HTTP/1.1 or HTTP/2.

On a TLS listener the client and the proxy agree on the protocol during the
handshake (ALPN, C{h2} or C{http/1.1}); the TLS layer builds the protocol
of a connection before that, so a L{Negotiating} protocol stands in until
the first bytes arrive, when the agreed protocol is known, and then hands
the connection to the right codec.  On a plain listener with C{h2c}
enabled, a client that opens with the HTTP/2 connection preface ("prior
knowledge") gets HTTP/2 too.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol

from twistproxy.deadlines import Wait, Waiting
from twistproxy.http.h2 import ALPN_H2, PREFACE, H2ServerProtocol
from twistproxy.http.server import HTTPServerProtocol


class Negotiating(Waiting, Protocol):
    """
    Stands in for the codec until the first bytes of a connection.

    @ivar inner: The codec, once chosen.
    @ivar admitted: Whether this connection holds a place in the factory's
        connection quota (handed on to the codec).
    @ivar counted: Always C{False}: connection filters count a connection
        once its codec is chosen.
    """

    admitted = False
    counted = False

    def __init__(self, factory):
        self._factory = factory
        self._clock = factory.reactor
        self._buffer = b""
        self.inner = None

    def connectionMade(self) -> None:
        self._factory.deadlines.add(self)
        self._set_timer(Wait.FIRST_BYTES, self._factory.timeouts.request_head)

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is None:
            data = self._buffer + data
            alpn = getattr(self.transport, "negotiatedProtocol", None)
            if alpn is None and self._factory.h2c:
                # Prior knowledge: wait for enough bytes to tell.
                if len(data) < len(PREFACE) and PREFACE.startswith(data):
                    self._buffer = data
                    return
                h2 = data.startswith(PREFACE)
            else:
                h2 = alpn == ALPN_H2
            self._buffer = b""
            self._set_timer(0, 0)
            self._factory.deadlines.discard(self)
            if h2:
                # Its writes, one per stream, are joined per reactor turn
                # when the transport can (TLS).
                coalesce = getattr(self.transport, "coalesce_writes", None)
                if coalesce is not None:
                    coalesce()
            inner = self.inner = (H2ServerProtocol if h2 else HTTPServerProtocol)(self._factory)
            inner.admitted, self.admitted = self.admitted, False
            inner.makeConnection(self.transport)
            # From now on the transport talks to the codec directly.
            if getattr(self.transport, "wrappedProtocol", None) is self:
                self.transport.wrappedProtocol = inner
        inner.dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        self._factory.deadlines.discard(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)
        else:
            self._factory.connection_closed(self)

    def _wait_expired(self, kind: Wait) -> None:
        self.transport.loseConnection()
