"""
End-to-end test of automatic certificates against Debian's C{pebble}, an
RFC 8555 test CA, started on loopback with its own configuration: its
HTTP-01 port is the proxy's plain listener and its resolver (C{-dnsserver})
the proxy's DNS listener.  The proxy (a C{twistd} child) orders one
certificate for C{example.test} (HTTP-01) and C{*.example.test} (DNS-01)
and installs it without a restart; an HTTPS request to the proxy then
verifies against pebble's root.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.request

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e_support import HOST, PebbleMixin, ProxyProcess, write_config

# An external account's MAC key, as pebble takes it (base64url).
MAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

CONFIG = """
[acme]
directory = "https://{host}:{pebble}/dir"
ca = "{ca}"
email = "ops@example.test"
storage = "{storage}"
retry = 2

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
        self.assertIn(b"renewed", proxy.output)

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
