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
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e_support import HOST, ProxyProcess, unused_port, write_config
from twistproxy.testing.certificates import cert_pem, issue_certificate, key_pem

PEBBLE = shutil.which("pebble")

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


class PebbleEndToEndTests(TestCase):
    """
    A certificate obtained from pebble by HTTP-01 and DNS-01.
    """

    timeout = 120
    # More of pebble's settings, for the tests that borrow this set-up.
    pebble_settings: dict = {}

    def setUp(self):
        if PEBBLE is None:
            raise SkipTest("pebble is not installed (apt-get install pebble)")
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        ca = issue_certificate("pebble test CA", ca=True)
        server = issue_certificate("localhost", sans=["localhost", HOST], issuer=ca)
        self.ca_file = self.write("ca.pem", cert_pem(ca[1]))
        self.ports = {name: unused_port() for name in
                      ("pebble", "management", "http", "https", "dns", "tlsalpn")}
        config = {"pebble": {
            "listenAddress": f"{HOST}:{self.ports['pebble']}",
            "managementListenAddress": f"{HOST}:{self.ports['management']}",
            "certificate": self.write("server.pem", cert_pem(server[1])),
            "privateKey": self.write("server.key", key_pem(server[0])),
            "httpPort": self.ports["http"], "tlsPort": self.ports["tlsalpn"],
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            **self.pebble_settings,
        }}
        path = self.write("pebble.json", json.dumps(config).encode())
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.pebble_log = open(os.path.join(self.cwd, "pebble.log"), "wb")
        self.addCleanup(self.pebble_log.close)
        self.pebble = subprocess.Popen(
            [PEBBLE, "-config", path, "-dnsserver", f"{HOST}:{self.ports['dns']}"],
            env=env, cwd=self.cwd, stdout=self.pebble_log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_pebble)
        return self.until(lambda: self.connects(self.ports["pebble"]), "pebble listening")

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.cwd, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def stop_pebble(self) -> None:
        self.pebble.terminate()
        try:
            self.pebble.wait(10)
        except subprocess.TimeoutExpired:
            self.pebble.kill()
            self.pebble.wait()

    @staticmethod
    def connects(port: int) -> bool:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except OSError:
            return False
        return True

    @defer.inlineCallbacks
    def until(self, check, what: str, seconds: float = 30.0):
        """
        Call C{check} every 0.5 s until it returns something true (at most
        C{seconds}); that value.
        """
        deadline = time.monotonic() + seconds
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                with open(os.path.join(self.cwd, "pebble.log"), "rb") as f:
                    log = f.read().decode("utf-8", "replace")[-3000:]
                proxy = getattr(self, "proxy", None)
                said = proxy.output.decode("utf-8", "replace")[-3000:] if proxy else ""
                self.fail(f"no {what} within {seconds} s; pebble said:\n{log}\n"
                          f"the proxy said:\n{said}")
            yield task.deferLater(reactor, 0.5, lambda: None)

    def pebble_root(self) -> str:
        context = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://{HOST}:{self.ports['management']}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read().decode("ascii")

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

    @defer.inlineCallbacks
    def test_http01_and_wildcard_dns01(self):
        """
        The proxy starts serving a stand-in, obtains a certificate for
        C{example.test} (HTTP-01 on its plain listener) and
        C{*.example.test} (DNS-01 through its own DNS) from pebble, and
        serves it without a restart: a client that trusts only pebble's
        root verifies it for both names.
        """
        path = write_config(self.cwd, CONFIG.format(
            host=HOST, ca=self.ca_file, storage=os.path.join(self.cwd, "acme"), **self.ports))
        self.proxy = proxy = ProxyProcess(reactor, ["--config", path], self.cwd)
        self.addCleanup(proxy.stop)
        yield proxy.start()
        root = self.pebble_root()
        cert = yield self.until(lambda: self.served(root, "www.example.test"),
                                "certificate from pebble")
        names = sorted(value for kind, value in cert["subjectAltName"] if kind == "DNS")
        self.assertEqual(names, ["*.example.test", "example.test"])
        self.assertIsNotNone(self.served(root, "example.test"))
        self.assertIn(b"answering http-01 for example.test", proxy.output)
        self.assertIn(b"answering dns-01 for example.test", proxy.output)  # the wildcard's
        self.assertIn(b"renewed", proxy.output)
