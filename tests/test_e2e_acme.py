"""
End-to-end test of automatic certificates against Debian's C{pebble}, an
RFC 8555 test CA, started on loopback with its own configuration: its
HTTP-01 port is the proxy's plain listener and its resolver (C{-dnsserver})
the proxy's DNS listener.  The proxy (a C{twistd} child) orders one
certificate for C{example.test} (HTTP-01) and C{*.example.test} (DNS-01)
and installs it without a restart; an HTTPS request to the proxy then
verifies against pebble's root.  With two workers, the master orders
and both workers serve the certificate.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.request
from typing import Dict, Tuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import defer, reactor, threads
from twisted.names import dns
from twisted.names.authority import PySourceAuthority
from twisted.names.server import DNSServerFactory
from twisted.trial.unittest import TestCase

from tests.e2e_support import (
    HOST,
    OriginFactory,
    PebbleMixin,
    ProxyProcess,
    ok_response,
    unused_port,
    write_config,
)

# An external account's MAC key, as pebble takes it (base64url).
MAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

# The [acme] section that points a proxy at the pebble these tests start
# (its URL and root), storing in {storage}; the other tests add to it.
PEBBLE_ACME = """
[acme]
directory = "https://{host}:{pebble}/dir"
ca = "{ca}"
email = "ops@example.test"
storage = "{storage}"
"""

CONFIG = PEBBLE_ACME + """retry = 2

[listeners.web]
endpoint = "tcp:{http}:interface={host}"

[listeners.secure]
endpoint = "tcp:{https}:interface={host}"
tls.acme = ["example.test", "*.example.test"]

[listeners.ns]
protocol = "dns"
endpoint = "udp:{dns}:interface={host}"

[upstreams.app]
servers = ["http://{host}:9"]

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster", minimum = 30 }}
records = [
    {{ name = "@", type = "A", value = "{host}" }},
    {{ name = "ns1", type = "A", value = "{host}" }},
]
"""


class _PebbleTestCase(PebbleMixin, TestCase):
    """
    Starts pebble on loopback before each test, with C{pebble_options}
    added to its configuration.
    """

    timeout = 120
    pebble_options: dict = {}

    def setUp(self):
        return self.start_pebble(**self.pebble_options)

    def served(self, root: str, name: str):
        """
        The certificate the proxy serves for C{name} when it verifies
        against C{root} (names checked), else C{None}.
        """
        context = ssl.create_default_context(cadata=root)
        try:
            with socket.create_connection((HOST, self.ports["https"]), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    return tls.getpeercert()
        except (OSError, ssl.SSLError):
            return None

    def start_proxy(self, text: str):
        """
        Start the proxy with the configuration C{text}; fires with it.
        """
        path = write_config(self.cwd, text)
        self.proxy = proxy = ProxyProcess(reactor, ["--config", path], self.cwd)
        self.addCleanup(proxy.stop)
        return proxy.start().addCallback(lambda _: proxy)


class PebbleEndToEndTests(_PebbleTestCase):
    """
    A certificate obtained from pebble by HTTP-01 and DNS-01, or by
    TLS-ALPN-01.
    """

    @defer.inlineCallbacks
    def test_http01_and_wildcard_dns01(self):
        """
        The proxy starts serving a stand-in, obtains a certificate for
        C{example.test} (HTTP-01 on its plain listener) and
        C{*.example.test} (DNS-01 through its own DNS) from pebble, and
        serves it without a restart: a client that trusts only pebble's
        root verifies it for both names.
        """
        proxy = yield self.start_proxy(CONFIG.format(
            host=HOST, ca=self.ca_file, storage=os.path.join(self.cwd, "acme"), **self.ports))
        root = self.pebble_root()
        cert = yield self.until(lambda: self.served(root, "www.example.test"),
                                "certificate from pebble")
        names = sorted(value for kind, value in cert["subjectAltName"] if kind == "DNS")
        self.assertEqual(names, ["*.example.test", "example.test"])
        self.assertIsNotNone(self.served(root, "example.test"))
        self.assertIn(b"answering http-01 for example.test", proxy.output)
        self.assertIn(b"answering dns-01 for example.test", proxy.output)  # the wildcard's
        # Logged once the certificate is in place: perhaps not read yet.
        yield self.until(lambda: b"renewed" in proxy.output, "line saying it renewed")

    @defer.inlineCallbacks
    def test_tls_alpn01(self):
        """
        With C{challenges = ["tls-alpn-01"]} the proxy obtains a
        certificate for C{example.test} by answering pebble's TLS-ALPN-01
        validation on its own TLS listener (pebble's C{tlsPort}), while
        the same listener serves ordinary clients, and serves the new
        certificate without a restart.
        """
        self.ports["https"] = self.ports["tlsalpn"]
        text = CONFIG.format(
            host=HOST, ca=self.ca_file, storage=os.path.join(self.cwd, "acme"), **self.ports)
        text = text.replace('retry = 2\n', 'retry = 2\nchallenges = ["tls-alpn-01"]\n')
        text = text.replace('["example.test", "*.example.test"]', '["example.test"]')
        proxy = yield self.start_proxy(text)
        root = self.pebble_root()
        cert = yield self.until(lambda: self.served(root, "example.test"),
                                "certificate from pebble")
        names = [value for kind, value in cert["subjectAltName"] if kind == "DNS"]
        self.assertEqual(names, ["example.test"])
        self.assertIn(b"answering tls-alpn-01 for example.test", proxy.output)
        self.assertNotIn(b"answering http-01", proxy.output)


class ExternalAccountEndToEndTests(_PebbleTestCase):
    """
    A CA that requires external account binding.
    """

    pebble_options = {"externalAccountBindingRequired": True,
                      "externalAccountMACKeys": {"kid-1": MAC_KEY}}

    @defer.inlineCallbacks
    def test_binding(self):
        """
        Pebble's directory says it requires external account binding;
        with C{[acme] external_account} set to a key pebble knows, the
        account is created and the certificate obtained.
        """
        context = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://{HOST}:{self.ports['pebble']}/dir"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            self.assertTrue(json.load(response)["meta"]["externalAccountRequired"])
        text = CONFIG.format(
            host=HOST, ca=self.ca_file, storage=os.path.join(self.cwd, "acme"), **self.ports)
        text = text.replace('["example.test", "*.example.test"]', '["example.test"]')
        text = text.replace("retry = 2\n", "retry = 2\nexternal_account = "
                            f'{{ key_id = "kid-1", hmac_key = "{MAC_KEY}" }}\n')
        proxy = yield self.start_proxy(text)
        root = self.pebble_root()
        yield self.until(lambda: self.served(root, "example.test"), "certificate from pebble")
        self.assertIn(b"answering http-01 for example.test", proxy.output)


# Two workers behind the proxy's sockets, the master ordering for both: no
# DNS listener (workers cannot share one), an origin and the admin API.
WORKERS_CONFIG = "workers = 2\n" + CONFIG.split("[listeners.ns]")[0].replace(
    '["example.test", "*.example.test"]', '["example.test"]') + """
[upstreams.app]
servers = ["http://{host}:{origin}"]

[admin]
endpoint = "tcp:{admin}:interface={host}"
"""


def _fetch(root: str, port: int) -> Tuple[bytes, bytes]:
    """
    In a thread: one HTTPS request for C{example.test} on a new
    connection, verified against C{root}; the certificate served (DER) and
    the response's status line.
    """
    context = ssl.create_default_context(cadata=root)
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="example.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
            status = tls.makefile("rb").readline().rstrip(b"\r\n")
            return tls.getpeercert(binary_form=True), status


class WorkersEndToEndTests(_PebbleTestCase):
    """
    ACME certificates with two worker processes.
    """

    def start_workers(self, challenge: str):
        """
        Start pebble's resolver (the proxy's workers serve no DNS), an
        origin, and the proxy with two workers validating by
        C{challenge}; fires with the proxy, whose C{admin_port} and
        C{storage} are set.
        """
        zone = self.write("zone.py", (
            'zone = [SOA("example.test", mname="ns.example.test", rname="root.example.test", '
            'serial=1, refresh=60, retry=60, expire=60, minimum=60), '
            f'A("example.test", "{HOST}")]\n').encode())
        names = DNSServerFactory(authorities=[PySourceAuthority(zone)])
        names.noisy = False
        udp = reactor.listenUDP(self.ports["dns"], dns.DNSDatagramProtocol(names), interface=HOST)
        self.addCleanup(udp.stopListening)
        origin = OriginFactory(lambda proto, req: proto.transport.write(ok_response(b"hi")))
        port = reactor.listenTCP(0, origin, interface=HOST)
        self.addCleanup(port.stopListening)
        admin, storage = unused_port(), os.path.join(self.cwd, "acme")
        text = WORKERS_CONFIG.format(host=HOST, ca=self.ca_file, storage=storage,
                                     origin=port.getHost().port, admin=admin, **self.ports)
        text = text.replace("retry = 2\n", f'retry = 2\nchallenges = ["{challenge}"]\n')

        def started(proxy):
            proxy.admin_port, proxy.storage = admin, storage
            return proxy

        return self.start_proxy(text).addCallback(started)

    @defer.inlineCallbacks
    def test_http01_with_two_workers(self):
        """
        With C{workers = 2}, the master orders the certificate for
        C{example.test} once; pebble's HTTP-01 validation reaches whichever
        worker accepts it, which answers from the master's directory; then
        both workers serve the certificate pebble issued (the one stored),
        on every connection, until each worker has served some.
        """
        proxy = yield self.start_workers("http-01")
        admin, storage = proxy.admin_port, proxy.storage
        root = self.pebble_root()
        yield self.until(lambda: self.served(root, "example.test"), "certificate from pebble",
                         seconds=60)
        with open(os.path.join(storage, "example.test.pem"), "rb") as f:
            issued = x509.load_pem_x509_certificates(f.read())[0].public_bytes(Encoding.DER)

        def per_worker() -> Dict[int, int]:
            url = f"http://{HOST}:{admin}/upstreams"
            with urllib.request.urlopen(url, timeout=10) as response:
                workers = json.load(response)["workers"]
            return {w["pid"]: sum(b["requests"] for g in w["groups"] for b in g["backends"])
                    for w in workers}

        served: Dict[int, int] = {}
        for _ in range(20):
            for _ in range(10):
                cert, status = yield threads.deferToThread(_fetch, root, self.ports["https"])
                self.assertEqual(cert, issued)
                self.assertEqual(status, b"HTTP/1.1 200 OK")
            served = yield threads.deferToThread(per_worker)
            if len(served) == 2 and all(served.values()):
                break
        self.assertEqual(len(served), 2, served)
        self.assertTrue(all(served.values()), served)
        answered = [line for line in proxy.output.splitlines()
                    if b"answering http-01 for example.test" in line]
        self.assertTrue(answered)
        self.assertFalse([line for line in answered if b"[worker-" in line], answered)

    @defer.inlineCallbacks
    def test_tls_alpn01_with_two_workers(self):
        """
        With C{workers = 2} and TLS-ALPN-01, pebble's validation handshake
        reaches a worker, which presents the challenge certificate for
        the key authorization the master wrote; the certificate issued is
        then served.
        """
        self.ports["https"] = self.ports["tlsalpn"]
        proxy = yield self.start_workers("tls-alpn-01")
        root = self.pebble_root()
        yield self.until(lambda: self.served(root, "example.test"), "certificate from pebble",
                         seconds=60)
        self.assertIn(b"answering tls-alpn-01 for example.test", proxy.output)
