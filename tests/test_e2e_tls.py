# -*- test-case-name: tests.test_e2e_tls -*-
"""
End-to-end tests of TLS: the installed proxy, run by C{twistd} as a child
process, with real OpenSSL handshakes over 127.0.0.1.

L{tests.test_tls} checks the certificate store, the contexts and a reload on
memory transports; these check what only the running program shows: which
certificate a real client (Python's C{ssl} module) is served for the name
it sends, that the intermediate travels with the leaf, that backends learn
the client used https and who a verified client is, that C{SIGHUP} reloads
the certificates without disturbing open connections (and keeps the old
ones when the new files are broken), that a silent socket is closed after
C{handshake_timeout}, that a plain listener redirects to https, and that
https backends are verified.

Every certificate is made here with C{cryptography} into a temporary
directory: a root CA, an intermediate CA, a wildcard C{*.example.test} leaf
signed by the intermediate (served with the intermediate), an exact
C{www.other.test} leaf and a default leaf signed by the root, a client CA
with one client certificate, and an origin certificate for the address
C{127.0.0.1}.  Clients trust the root only.

Clients are blocking sockets in threads, each operation with a timeout; each
proxy process is stopped by its PID in cleanup.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Dict, Optional, Tuple

from twisted.internet import defer, ssl as twisted_ssl

from twistproxy.testing import cert_pem as _cert_pem
from twistproxy.testing import issue_certificate as _issue
from twistproxy.testing import pem_bundle as _bundle
from tests.e2e_support import (
    HOST,
    E2ETestCase,
    OriginFactory,
    listener_config,
    ok_response,
)

# ---------------------------------------------------------------------------
# Certificates


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


class _PKI:
    """
    The test certificates, written as PEM files into C{directory}.

    @ivar files: File name to path.
    @ivar serials: Certificate name to serial number.
    """

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.root = _issue("E2E Root CA", ca=True, organization="twistproxy tests")
        self.intermediate = _issue("E2E Intermediate CA", ca=True, issuer=self.root)
        self.wildcard = _issue("*.example.test", ("*.example.test",), issuer=self.intermediate)
        self.other = _issue("www.other.test", ("www.other.test",), issuer=self.root)
        self.default = _issue("default.test", ("default.test",), issuer=self.root)
        self.client_ca = _issue("E2E Client CA", ca=True)
        self.alice = _issue("alice", organization="Example", issuer=self.client_ca, client=True)
        self.origin = _issue("origin", (HOST,), issuer=self.root)
        self.stranger_ca = _issue("Stranger CA", ca=True)
        self.files: Dict[str, str] = {}
        for name, data in [
            ("root.pem", _cert_pem(self.root[1])),
            ("wildcard.pem", _bundle(self.wildcard, self.intermediate)),
            ("other.pem", _bundle(self.other)),
            ("default.pem", _bundle(self.default)),
            ("client-ca.pem", _cert_pem(self.client_ca[1])),
            ("alice.pem", _bundle(self.alice)),
            ("stranger-ca.pem", _cert_pem(self.stranger_ca[1])),
        ]:
            self.files[name] = _write(os.path.join(directory, name), data)

    def replace_default(self) -> int:
        """
        Overwrite C{default.pem} with a new certificate for the same name.

        @return: The new certificate's serial number.
        """
        renewed = _issue("default.test", ("default.test",), issuer=self.root)
        _write(self.files["default.pem"], _bundle(renewed))
        return renewed[1].serial_number


# ---------------------------------------------------------------------------
# Clients (run in threads)


def _client_context(pki: _PKI, check_hostname: bool = True,
                    client_cert: Optional[str] = None) -> ssl.SSLContext:
    """
    A client context that trusts the test root only.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.files["root.pem"])
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if client_cert is not None:
        ctx.load_cert_chain(client_cert)
    return ctx


def _h2_get_two(port: int, ctx: ssl.SSLContext):
    """
    Open an HTTP/2 connection (ALPN h2) and send two GETs on two streams at
    once; return [(status, body)] for both.
    """
    import h2.connection
    import h2.events

    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="a.example.test")
    try:
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        for stream in (1, 3):
            conn.send_headers(stream, [(":method", "GET"), (":path", "/"),
                                       (":scheme", "https"), (":authority", "a.example.test")],
                              end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body, done = {}, {}, set()
        while len(done) < 2:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body[event.stream_id] = body.get(event.stream_id, b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    done.add(event.stream_id)
            sock.sendall(conn.data_to_send())
        return [(status.get(s), body.get(s, b"")) for s in (1, 3)]
    finally:
        sock.close()


class _TLSClient:
    """
    A blocking HTTP/1.1 client on one TLS connection.
    """

    def __init__(self, port: int, ctx: ssl.SSLContext, server_name: Optional[str],
                 timeout: float = 10.0):
        raw = socket.create_connection((HOST, port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def peer(self) -> dict:
        return self.sock.getpeercert()

    def request(self, host: str, extra: bytes = b"") -> Tuple[int, Dict[bytes, bytes], bytes]:
        """
        Send a GET and read its (Content-Length framed) response.

        @return: C{(status, lower-cased headers, body)}.
        """
        self.sock.sendall(b"GET /e2e-tls HTTP/1.1\r\nHost: %s\r\n%s\r\n"
                          % (host.encode("ascii"), extra))
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status, headers, body

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the proxy")
        self._buffer += data


def _sans(cert: dict) -> list:
    return sorted(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")


def _serial(cert: dict) -> int:
    return int(cert["serialNumber"], 16)


def _peer(port: int, ctx: ssl.SSLContext, server_name: Optional[str]) -> dict:
    """
    Handshake, and return the certificate the proxy presented.
    """
    client = _TLSClient(port, ctx, server_name)
    try:
        return client.peer()
    finally:
        client.close()


def _get(port: int, ctx: ssl.SSLContext, server_name: Optional[str], host: str,
         extra: bytes = b""):
    client = _TLSClient(port, ctx, server_name)
    try:
        return client.request(host, extra)
    finally:
        client.close()


def _plain_exchange(port: int, request: bytes) -> bytes:
    """
    Send C{request} on a plain connection and read until the proxy closes
    it or a whole head has arrived.
    """
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
        return data


def _raw_header_values(head: bytes, name: bytes) -> list:
    """
    Every value of field C{name} in a raw head, in order.
    """
    values = []
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name.lower():
            values.append(value.strip())
    return values


# ---------------------------------------------------------------------------
# Tests


class _TLSProxyTestCase(E2ETestCase):
    """
    Makes the certificates, an origin and a proxy for each test, and stops
    them after it.
    """

    def setUp(self):
        self.pki = _PKI(os.path.abspath(self.mktemp()))

    def ok_origin(self, tls_options=None) -> OriginFactory:
        """
        An origin answering 200 with a short body; over TLS when given
        C{tls_options}.
        """
        return self.start_origin(
            lambda proto, req: proto.transport.write(ok_response(b"hello from the origin")),
            tls_options=tls_options)

    def tls_listener(self, extra: str = "") -> str:
        """
        The configuration of a TLS listener C{web} with the three server
        certificates, the default one first.
        """
        f = self.pki.files
        return (
            listener_config("web")
            + "[listeners.web.tls]\n"
            f'certificates = ["{f["default.pem"]}", "{f["wildcard.pem"]}", "{f["other.pem"]}"]\n'
            "default = 0\n"
            + extra + "\n"
        )

    @defer.inlineCallbacks
    def start_tls_proxy(self, extra_tls: str = "", extra: str = ""):
        """
        An origin and a proxy with the TLS listener in front of it.

        @return: A L{Deferred} firing with C{(origin, proxy)}.
        """
        origin = self.ok_origin()
        proxy = yield self.start_configured_proxy(
            self.tls_listener(extra_tls) + extra
            + f'[upstreams.app]\nservers = ["http://{HOST}:{origin.port}"]\n'
        )
        return origin, proxy


class CertificateSelectionTests(_TLSProxyTestCase):
    """
    The certificate a client is shown depends on the name it sends (SNI),
    and comes with its intermediate.
    """

    @defer.inlineCallbacks
    def test_sni_selection(self):
        """
        A name under the wildcard gets the wildcard certificate, the exact
        name its own certificate, a name two labels under the wildcard's
        domain and a connection without SNI the default certificate.
        """
        _, proxy = yield self.start_tls_proxy()
        loose = _client_context(self.pki, check_hostname=False)
        seen = {}
        for name in ("a.example.test", "www.other.test", "b.c.example.test", None):
            cert = yield self.in_thread(_peer, proxy.port, loose, name)
            seen[name] = _sans(cert)
        self.assertEqual(seen, {
            "a.example.test": ["*.example.test"],
            "www.other.test": ["www.other.test"],
            "b.c.example.test": ["default.test"],
            None: ["default.test"],
        })

    @defer.inlineCallbacks
    def test_chain_served_whole(self):
        """
        A client that trusts only the root and checks the host name
        completes the handshake for a name under the wildcard, whose leaf
        the intermediate signed: the proxy sent the intermediate too.
        """
        _, proxy = yield self.start_tls_proxy()
        strict = _client_context(self.pki)
        cert = yield self.in_thread(_peer, proxy.port, strict, "a.example.test")
        self.assertEqual(dict(x[0] for x in cert["issuer"])["commonName"],
                         "E2E Intermediate CA")

    @defer.inlineCallbacks
    def test_handshake_timeout(self):
        """
        A socket that connects and sends nothing is closed by the proxy
        after C{handshake_timeout} (1 s), not before and not much later.
        """
        _, proxy = yield self.start_tls_proxy("handshake_timeout = 1\n")

        def silent():
            with socket.create_connection((HOST, proxy.port), timeout=10) as s:
                started = time.monotonic()
                try:
                    data = s.recv(1)
                except ConnectionResetError:
                    data = b""
                return data, time.monotonic() - started

        data, elapsed = yield self.in_thread(silent)
        self.assertEqual(data, b"")
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 3.0)


class ForwardingTests(_TLSProxyTestCase):
    """
    Requests that arrive over TLS reach a plain origin marked as https.
    """

    @defer.inlineCallbacks
    def test_https_request_proxied(self):
        """
        An HTTPS request reaches the plain origin with C{X-Forwarded-Proto:
        https} and without the X-Client-Subject the client forged; the
        response carries C{Strict-Transport-Security} since C{hsts} is set.
        """
        origin, proxy = yield self.start_tls_proxy("hsts = 300\n")
        status, headers, body = yield self.in_thread(
            _get, proxy.port, _client_context(self.pki), "a.example.test", "a.example.test",
            b"X-Client-Subject: CN=forged\r\n")
        self.assertEqual((status, body), (200, b"hello from the origin"))
        self.assertEqual(headers.get(b"strict-transport-security"), b"max-age=300")
        [req] = origin.requests
        self.assertEqual(req.headers.get(b"x-forwarded-proto"), b"https")
        self.assertEqual(_raw_header_values(req.head, b"x-client-subject"), [])

    @defer.inlineCallbacks
    def test_connection_close_closes_tls(self):
        """
        After answering a request that asked for C{Connection: close}, the
        proxy closes the TLS connection (close_notify, then end of file)
        instead of leaving the client waiting.
        """
        origin, proxy = yield self.start_tls_proxy()

        def get_then_eof():
            client = _TLSClient(proxy.port, _client_context(self.pki), "a.example.test",
                                timeout=5.0)
            try:
                status, _, _ = client.request("a.example.test", b"Connection: close\r\n")
                # Returns b"" at the end of the stream; raises on a timeout.
                return status, client.sock.recv(65536)
            finally:
                client.close()

        status, rest = yield self.in_thread(get_then_eof)
        self.assertEqual((status, rest), (200, b""))

    @defer.inlineCallbacks
    def test_http2_by_alpn(self):
        """
        A client offering h2 by ALPN gets HTTP/2: two concurrent streams
        are answered, each through the HTTP/1.1 origin.
        """
        origin, proxy = yield self.start_tls_proxy()
        responses = yield self.in_thread(_h2_get_two, proxy.port, _client_context(self.pki))
        self.assertEqual(sorted(responses), [(b"200", b"hello from the origin")] * 2)
        self.assertEqual(len(origin.requests), 2)
        self.assertEqual({r.headers.get(b"x-forwarded-proto") for r in origin.requests}, {b"https"})

    @defer.inlineCallbacks
    def test_redirect_https(self):
        """
        A plain listener with C{redirect_https} answers 308 with the same
        URL over https on C{https_port}, and forwards nothing.
        """
        origin, proxy = yield self.start_tls_proxy(
            extra=listener_config("plain", "redirect_https = true\nhttps_port = 8443\n"))
        _, line = yield proxy.wait_for_line(r"listener plain listening on 127\.0\.0\.1:\d+")
        plain_port = int(line.rsplit(":", 1)[1])
        data = yield self.in_thread(
            _plain_exchange, plain_port,
            b"GET /some/path?q=1 HTTP/1.1\r\nHost: www.other.test\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 308 "), data)
        head = data.split(b"\r\n\r\n", 1)[0]
        self.assertEqual(_raw_header_values(head, b"location"),
                         [b"https://www.other.test:8443/some/path?q=1"])
        self.assertEqual(origin.requests, [])


class MutualTLSTests(_TLSProxyTestCase):
    """
    With C{client_ca}, only clients with a certificate it signed get
    through, and backends learn their subject.
    """

    def start_mtls_proxy(self):
        return self.start_tls_proxy(f'client_ca = "{self.pki.files["client-ca.pem"]}"\n')

    @defer.inlineCallbacks
    def test_client_with_certificate(self):
        """
        A client with a certificate from the client CA gets a 200; the
        origin receives its subject, once, in C{X-Client-Subject}, never the
        value the client sent in that field.
        """
        origin, proxy = yield self.start_mtls_proxy()
        ctx = _client_context(self.pki, client_cert=self.pki.files["alice.pem"])
        status, _, _ = yield self.in_thread(
            _get, proxy.port, ctx, "www.other.test", "www.other.test",
            b"X-Client-Subject: CN=mallory\r\n")
        self.assertEqual(status, 200)
        [req] = origin.requests
        self.assertEqual(_raw_header_values(req.head, b"x-client-subject"),
                         [b"CN=alice,O=Example"])

    @defer.inlineCallbacks
    def test_client_without_certificate(self):
        """
        A client without a certificate is refused at the handshake (with
        TLS 1.3 the client learns it on its first read) and its request
        never reaches the origin.
        """
        origin, proxy = yield self.start_mtls_proxy()

        def attempt():
            try:
                return _get(proxy.port, _client_context(self.pki), "www.other.test",
                            "www.other.test")
            except (ssl.SSLError, ConnectionError) as e:
                return e

        result = yield self.in_thread(attempt)
        self.assertIsInstance(result, (ssl.SSLError, ConnectionError))
        self.assertEqual(origin.requests, [])


class ReloadTests(_TLSProxyTestCase):
    """
    C{SIGHUP} reloads the certificates from their files.
    """

    @defer.inlineCallbacks
    def test_reload(self):
        """
        After the default certificate's file is replaced and the proxy gets
        C{SIGHUP}, a new connection is shown the new certificate, while a
        keep-alive connection opened before goes on serving requests.
        """
        _, proxy = yield self.start_tls_proxy()
        ctx = _client_context(self.pki, check_hostname=False)
        old_serial = self.pki.default[1].serial_number
        client = yield self.in_thread(_TLSClient, proxy.port, ctx, None)
        self.addCleanup(client.close)
        self.assertEqual(_serial(client.peer()), old_serial)
        status, _, _ = yield self.in_thread(client.request, "default.test")
        self.assertEqual(status, 200)

        new_serial = self.pki.replace_default()
        yield self.reload(proxy, done=r"listener web: certificates reloaded")

        cert = yield self.in_thread(_peer, proxy.port, ctx, None)
        self.assertEqual(_serial(cert), new_serial)
        self.assertNotEqual(new_serial, old_serial)
        status, _, body = yield self.in_thread(client.request, "default.test")
        self.assertEqual((status, body), (200, b"hello from the origin"))

    @defer.inlineCallbacks
    def test_broken_replacement_refused(self):
        """
        When the replaced file is broken (a certificate whose key is not in
        it), C{SIGHUP} logs that the new certificates are refused, the
        proxy keeps running and new connections still get the old
        certificate.
        """
        _, proxy = yield self.start_tls_proxy()
        ctx = _client_context(self.pki, check_hostname=False)
        old_serial = self.pki.default[1].serial_number
        _write(self.pki.files["default.pem"], _cert_pem(self.pki.default[1]))
        yield self.reload(proxy, done=r"listener web: new certificates refused")
        self.assertTrue(proxy.running)
        cert = yield self.in_thread(_peer, proxy.port, ctx, None)
        self.assertEqual(_serial(cert), old_serial)


class BackendTLSTests(_TLSProxyTestCase):
    """
    An https origin behind the proxy is reached over verified TLS.
    """

    @defer.inlineCallbacks
    def start_backend_proxy(self, ca_file: str):
        """
        An https origin with a certificate for 127.0.0.1 signed by the test
        root, and a plain proxy listener in front of it trusting C{ca_file}.
        """
        tls_options = twisted_ssl.PrivateCertificate.loadPEM(
            _bundle(self.pki.origin)).options()
        origin = self.ok_origin(tls_options)
        proxy = yield self.start_configured_proxy(
            listener_config()
            + "[upstreams.app]\n"
            f'servers = ["https://{HOST}:{origin.port}"]\n\n'
            "[upstreams.app.tls]\n"
            f'ca = "{ca_file}"\n'
        )
        return origin, proxy

    @defer.inlineCallbacks
    def test_verified_backend(self):
        """
        With the test root as C{ca}, a request is answered 200 by the https
        origin.
        """
        origin, proxy = yield self.start_backend_proxy(self.pki.files["root.pem"])
        data = yield self.in_thread(
            _plain_exchange, proxy.port, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertEqual(len(origin.requests), 1)

    @defer.inlineCallbacks
    def test_wrong_ca_is_502(self):
        """
        With a CA that did not sign the origin's certificate, the request
        is answered 502 and never reaches the origin.
        """
        origin, proxy = yield self.start_backend_proxy(self.pki.files["stranger-ca.pem"])
        data = yield self.in_thread(
            _plain_exchange, proxy.port, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 502 "), data)
        self.assertEqual(origin.requests, [])
