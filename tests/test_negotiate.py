"""
Tests for L{twistproxy.http.negotiate}: HTTP/1.1 or HTTP/2 per connection.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.http.h2 import PREFACE, H2ServerProtocol
from twistproxy.http.negotiate import Negotiating
from twistproxy.http.server import HTTPServerProtocol
from twistproxy.testing import MemoryProxy


class _ALPNTransport(StringTransport):
    def __init__(self, protocol):
        super().__init__(lenient=True)
        self.negotiatedProtocol = protocol
        self.coalesced = False

    def coalesce_writes(self):
        self.coalesced = True


class NegotiatingTests(SynchronousTestCase):
    """
    The codec follows ALPN, or the preface on h2c listeners.
    """

    def connect(self, transport, **factory_options):
        proxy = MemoryProxy()
        for name, value in factory_options.items():
            setattr(proxy.factory, name, value)
        protocol = proxy.factory.buildProtocol(None)
        self.assertIsInstance(protocol, Negotiating)
        protocol.makeConnection(transport)
        return proxy, protocol

    def test_alpn_h2(self):
        """
        A TLS connection that agreed on h2 gets the HTTP/2 codec.
        """
        proxy, protocol = self.connect(_ALPNTransport(b"h2"), http2=True)
        protocol.dataReceived(PREFACE)
        self.assertIsInstance(protocol.inner, H2ServerProtocol)

    def test_h2_writes_coalesced(self):
        """
        The HTTP/2 codec's writes are joined per reactor turn by a
        transport that can (TLS), the HTTP/1.1 codec's are not; a
        transport that cannot serves either.
        """
        for alpn, coalesced in ((b"h2", True), (b"http/1.1", False)):
            transport = _ALPNTransport(alpn)
            proxy, protocol = self.connect(transport, http2=True)
            protocol.dataReceived(PREFACE if coalesced else b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(transport.coalesced, coalesced, alpn)
        proxy, protocol = self.connect(StringTransport(lenient=True), h2c=True)
        protocol.dataReceived(PREFACE)
        self.assertIsInstance(protocol.inner, H2ServerProtocol)

    def test_alpn_http11(self):
        """
        A TLS connection that agreed on http/1.1, or on nothing, gets the
        HTTP/1.1 codec, which serves the request.
        """
        for alpn in (b"http/1.1", None):
            proxy, protocol = self.connect(_ALPNTransport(alpn), http2=True)
            protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertIsInstance(protocol.inner, HTTPServerProtocol)
            self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8001)])

    def test_h2c_preface_in_pieces(self):
        """
        On an h2c listener the preface may arrive in pieces; the codec is
        chosen once it is complete.
        """
        proxy, protocol = self.connect(StringTransport(lenient=True), h2c=True)
        protocol.dataReceived(PREFACE[:10])
        self.assertIsNone(protocol.inner)
        protocol.dataReceived(PREFACE[10:])
        self.assertIsInstance(protocol.inner, H2ServerProtocol)

    def test_h2c_http11(self):
        """
        On an h2c listener, a request that is not the preface is HTTP/1.1
        (decided as soon as a byte differs).
        """
        proxy, protocol = self.connect(StringTransport(lenient=True), h2c=True)
        protocol.dataReceived(b"GET")
        self.assertIsInstance(protocol.inner, HTTPServerProtocol)
        protocol.dataReceived(b" / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(proxy.backend_attempts(), [("127.0.0.1", 8001)])

    def test_silent_connection(self):
        """
        A connection that sends nothing is closed after request_head.
        """
        transport = StringTransport(lenient=True)
        proxy, protocol = self.connect(transport, h2c=True)
        proxy.reactor.advance(proxy.config.timeouts.request_head + 0.5)
        self.assertTrue(transport.disconnecting)

    def test_plain_factory_skips_negotiation(self):
        """
        Without http2 or h2c the factory builds the HTTP/1.1 codec directly.
        """
        self.assertIsInstance(MemoryProxy().factory.buildProtocol(None), HTTPServerProtocol)
