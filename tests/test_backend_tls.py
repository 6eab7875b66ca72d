"""
Tests for TLS to backends (L{twistproxy.tls.client_creator} and the
pool's use of it): unit tests on a memory reactor, and real handshakes over loopback.
"""

from __future__ import annotations

import socket

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch, IPAddressMismatch
from service_identity.hazmat import DNS_ID, IPAddress_ID
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from twistproxy.config import (
    AccessLog, ConfigError, Listener, ProxyConfig, Route, UpstreamGroup, UpstreamTLS, server,
)
from twistproxy.service import ProxyService
from twistproxy.testing import MemoryProxy, cert_pem, issue_certificate, pem_bundle
from twistproxy.tls import tls_failure


def _write(test, data: bytes) -> str:
    path = test.mktemp()
    with open(path, "wb") as f:
        f.write(data)
    return path


def _config(url: str, tls: UpstreamTLS = UpstreamTLS(), endpoint: str = "tcp:8080") -> ProxyConfig:
    return ProxyConfig(
        listeners=(Listener("main", endpoint),),
        upstreams={"app": UpstreamGroup("app", (server(url),), tls=tls)},
        routes=(Route("app"),),
        access_log=AccessLog(path=""),
    )


class ConfigurationTests(SynchronousTestCase):
    """
    https backends get a verifying TLS connection creator; bad files are
    configuration errors at their path.
    """

    def test_https_backend_uses_tls(self):
        """
        A request to an https backend opens a TLS connection to it.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config("https://backend.example:8443"), reactor)
        from twistproxy.testing import MemoryPeer

        MemoryPeer(service.factory.buildProtocol(None), peer=None).send(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        [(host, port, factory, creator, timeout, bind)] = reactor.sslClients
        self.assertEqual((host, port), ("backend.example", 8443))
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(creator._hostnameASCII, "backend.example")

    def test_missing_ca(self):
        """
        A CA bundle that cannot be read is reported at tls.ca.
        """
        config = _config("https://b:443", UpstreamTLS(ca="/nonexistent/ca.pem"))
        e = self.assertRaises(ConfigError, ProxyService, config, MemoryReactorClock())
        self.assertEqual(e.path, "upstreams.app.tls.ca")

    def test_ca_without_certificate(self):
        """
        A CA file with no certificate in it is refused.
        """
        config = _config("https://b:443", UpstreamTLS(ca=_write(self, b"not a pem")))
        e = self.assertRaises(ConfigError, ProxyService, config, MemoryReactorClock())
        self.assertIn("holds no PEM certificate", e.problem)

    def test_server_name(self):
        """
        server_name replaces the URL's host for SNI and verification.
        """
        reactor = MemoryReactorClock()
        service = ProxyService(_config("https://10.0.0.1:443", UpstreamTLS(server_name="api.internal")),
                               reactor)
        [pool] = service.forwarder.groups["app"].pools.values()
        self.assertEqual(pool.tls._hostnameASCII, "api.internal")


def _mismatch(*identities) -> Failure:
    """
    The failure Twisted gives when a certificate is for other names.
    """
    errors = [DNSMismatch(i) if isinstance(i, DNS_ID) else IPAddressMismatch(i)
              for i in identities]
    return Failure(VerificationError(errors=errors))


class FailureReportTests(SynchronousTestCase):
    """
    A failed TLS connection to a backend is a 502 with reason
    upstream_tls_failed and one log line naming the backend and why,
    whichever way the failure arrives.
    """

    def lose_backend(self, reason: Failure):
        """
        Send a request, then lose its backend connection with C{reason};
        return the client and the log events.
        """
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.proxy = MemoryProxy()
        client = self.proxy.connect_client()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.proxy.accept_backend().protocol.connectionLost(reason)
        return client, [e for e in events if e.get("backend") == "127.0.0.1:8001"]

    def test_name_mismatch(self):
        """
        A certificate for another host (service_identity's
        VerificationError, not an OpenSSL error) is reported as
        upstream_tls_failed, not upstream_closed, and logged.
        """
        client, events = self.lose_backend(_mismatch(DNS_ID("app.internal")))
        self.assertTrue(client.received().startswith(b"HTTP/1.1 502 "))
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_tls_failed")
        [event] = events
        self.assertEqual(event["error"], "the certificate is not for app.internal")
        self.assertIn("upstream_tls_failed", event["log_format"])

    def test_handshake_error(self):
        """
        An OpenSSL error (an untrusted or expired certificate) is reported
        the same way, with OpenSSL's words.
        """
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        client, events = self.lose_backend(Failure(error))
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_tls_failed")
        [event] = events
        self.assertEqual(event["error"],
                         "certificate verify failed (untrusted, expired or not yet valid)")

    def test_plain_close_is_not_tls(self):
        """
        A connection closed without a TLS error stays upstream_closed,
        without a TLS log line.
        """
        client, events = self.lose_backend(Failure(ConnectionDone()))
        self.assertEqual(self.proxy.exchanges[-1].reason, "upstream_closed")
        self.assertEqual(events, [])

    def test_descriptions(self):
        """
        L{tls_failure} names every identity a certificate failed to match
        (host names and IP addresses), and is C{None} for other failures.
        """
        self.assertEqual(
            tls_failure(_mismatch(DNS_ID("a.example"), IPAddress_ID("192.0.2.1"))),
            "the certificate is not for a.example or 192.0.2.1")
        self.assertEqual(tls_failure(Failure(SSL.Error([("SSL routines", "", "no shared cipher")]))),
                         "no shared cipher")
        self.assertIsNone(tls_failure(Failure(ConnectionDone())))


class _Hello(Resource):
    isLeaf = True

    def render(self, request):
        return b"hello over tls"


def _get(port: int) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        sock.close()


class LoopbackTests(TestCase):
    """
    Real handshakes with a TLS origin on 127.0.0.1.
    """

    timeout = 30

    def start(self, trusted_pem: bytes, client_ca=None, client_pem: bytes = b""):
        ca = issue_certificate("Test CA", ca=True)
        origin = issue_certificate("origin", sans=("localhost", "127.0.0.1"), issuer=ca)
        if client_ca is None:
            origin_ctx = ssl.PrivateCertificate.loadPEM(pem_bundle(origin)).options()
        else:
            # An origin that only talks to clients with a certificate.
            origin_ctx = ssl.PrivateCertificate.loadPEM(pem_bundle(origin)).options(
                ssl.Certificate.loadPEM(cert_pem(client_ca[1])))
        listening = global_reactor.listenSSL(0, Site(_Hello()), origin_ctx, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        ca_file = _write(self, trusted_pem or cert_pem(ca[1]))
        url = f"https://127.0.0.1:{listening.getHost().port}"
        tls = UpstreamTLS(ca=ca_file, client_cert=_write(self, client_pem) if client_pem else "")
        service = ProxyService(
            _config(url, tls, "tcp:0:interface=127.0.0.1"), global_reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.exchanges = []
        previous = service.factory._on_exchange_end
        service.factory._on_exchange_end = lambda x: (self.exchanges.append(x), previous(x))
        return service.listeners["main"].port.getHost().port

    def test_verified_backend(self):
        """
        With the origin's CA trusted, requests go through over TLS, and the
        connection is pooled.
        """
        port = self.start(None)
        d = deferToThread(_get, port)

        def check(data):
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
            self.assertTrue(data.endswith(b"hello over tls"))
        return d.addCallback(check)

    def test_unverified_backend_is_502(self):
        """
        An origin whose certificate does not verify gets a 502 with reason
        upstream_tls_failed, never an unverified request.
        """
        _, other_ca = issue_certificate("Other CA", ca=True)
        port = self.start(cert_pem(other_ca))
        d = deferToThread(_get, port)

        def check(data):
            self.assertTrue(data.startswith(b"HTTP/1.1 502"), data)
            self.assertEqual(self.exchanges[-1].reason, "upstream_tls_failed")
            self.flushLoggedErrors()
        return d.addCallback(check)

    def test_client_certificate_presented(self):
        """
        With client_cert set, the proxy presents it to an origin that
        requires one; without it, such an origin is a 502.
        """
        client_ca = issue_certificate("Client CA", ca=True)
        client = issue_certificate("proxy", issuer=client_ca, client=True)
        port = self.start(None, client_ca=client_ca, client_pem=pem_bundle(client))
        d = deferToThread(_get, port)

        def check(data):
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
        return d.addCallback(check)

    def test_client_certificate_missing(self):
        """
        An origin requiring a client certificate refuses a proxy without
        one: 502 upstream_tls_failed.
        """
        port = self.start(None, client_ca=issue_certificate("Client CA", ca=True))
        d = deferToThread(_get, port)

        def check(data):
            self.assertTrue(data.startswith(b"HTTP/1.1 502"), data)
            self.assertEqual(self.exchanges[-1].reason, "upstream_tls_failed")
        return d.addCallback(check)
