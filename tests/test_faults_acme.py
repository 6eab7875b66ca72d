# -*- test-case-name: tests.test_faults_acme -*-
"""
Fault tests: automatic certificates (ACME) when the CA is down or refuses,
and a renewal under traffic.

The proxy runs as a C{twistd} child process with a TLS listener whose
certificate is ACME's, in front of a real origin on loopback.  The CA is
either nothing at all (a port where nobody listens), or Debian's C{pebble}
started on loopback (L{tests.e2e_support.PebbleMixin}) refusing the name
(its C{domainBlocklist}), or issuing certificates that live 30 seconds,
so that they fall due for renewal during the test.  Clients count what
they get over TLS; the proxy's log counts the tries.  The promises are
those of the section "Automatic certificates (ACME)" of docs/faults.rst.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
import urllib.request
from typing import Optional

from twisted.internet import defer, reactor, task, threads

from tests.e2e_support import (
    HOST, E2ETestCase, PebbleMixin, ProxyProcess, RawClient, get_request, ok_response, unused_port,
    write_config,
)
from tests.test_e2e_acme import PEBBLE_ACME

# The DNS listener that pebble resolves example.test with (its
# -dnsserver), and the zone.
ZONE = """
[listeners.ns]
protocol = "dns"
endpoint = "udp:{dns}:interface={host}"

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster", minimum = 30 }}
records = [{{ name = "@", type = "A", value = "{host}" }}]
"""

CONFIG = PEBBLE_ACME + """retry = 1

[listeners.web]
endpoint = "tcp:{http}:interface={host}"

[listeners.secure]
endpoint = "tcp:{https}:interface={host}"
tls.acme = ["example.test"]

[admin]
endpoint = "tcp:{admin}:interface={host}"

[upstreams.app]
servers = ["http://{host}:{origin}"]
""" + ZONE

# How long the CA-down and CA-refusing tests watch the retries: with
# retry = 1 the tries come at about 0, 1, 3 and 7 s, the next at 15 s.
WATCH = 12.0
MOST_TRIES = 5


def _tries(output: bytes) -> int:
    # The failed tries the proxy has logged so far.
    return len(re.findall(rb"renewal failed \(\d+ in a row\)", output))


def served_certificate(port: int, root: Optional[str] = None):
    """
    The certificate (DER) the proxy on C{port} serves for C{example.test}:
    verified against C{root} when given (else C{None} if it does not
    verify), not verified otherwise.
    """
    if root is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=root)
    try:
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="example.test") as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


class _Client:
    """
    One keep-alive HTTPS connection to the proxy (blocking: use it in a
    thread), not verifying the certificate, which it remembers.
    """

    def __init__(self, port: int) -> None:
        self.raw = RawClient(port)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.raw.sock = context.wrap_socket(self.raw.sock, server_hostname="example.test")
        self.certificate = self.raw.sock.getpeercert(binary_form=True)

    def get(self) -> int:
        self.raw.send(get_request(b"/", host=b"example.test"))
        return self.raw.read_response().status


class ACMEFaultTests(PebbleMixin, E2ETestCase):
    """
    The CA down, refusing, and renewing under traffic.
    """

    timeout = 180

    @defer.inlineCallbacks
    def start_proxy(self, ca_port: int, ca_file: str):
        origin = self.start_origin(
            lambda proto, request: proto.transport.write(ok_response(b"hello")))
        for name in ("http", "dns"):  # pebble's, when it runs
            self.ports.setdefault(name, unused_port())
        self.ports.update(https=unused_port(), admin=unused_port())
        path = write_config(self.cwd, CONFIG.format(
            host=HOST, pebble=ca_port, ca=ca_file, origin=origin.port,
            storage=os.path.join(self.cwd, "acme"), **{
                k: self.ports[k] for k in ("http", "https", "admin", "dns")}))
        self.proxy = ProxyProcess(reactor, ["--config", path], self.cwd)
        self.addCleanup(self.proxy.stop)
        yield self.proxy.start()
        # start() fires once the first listener listens; the TLS one next.
        yield self.wait_for(lambda: self.connects(self.ports["https"]), 30, "the TLS listener")

    def acme_status(self):
        url = f"http://{HOST}:{self.ports['admin']}/acme"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["certificates"][0]

    @defer.inlineCallbacks
    def watch_retries(self):
        """
        For L{WATCH} seconds, check every second that the stand-in is
        served and answers; then return the tries logged.
        """
        client = yield threads.deferToThread(_Client, self.ports["https"])
        self.addCleanup(client.raw.close)
        deadline = time.monotonic() + WATCH
        while time.monotonic() < deadline:
            self.assertEqual((yield threads.deferToThread(client.get)), 200)
            fresh = yield threads.deferToThread(served_certificate, self.ports["https"])
            self.assertEqual(fresh, client.certificate)
            yield task.deferLater(reactor, 1.0, lambda: None)
        return _tries(self.proxy.output)

    @defer.inlineCallbacks
    def test_ca_down_serving_goes_on_and_retries_back_off(self):
        """
        With the CA down (nobody listens at its directory URL), the proxy
        serves its stand-in certificate all along (new connections and a
        kept-alive one get their answers) and tries again with a doubling
        back-off: over 12 seconds with C{retry = 1}, at least two tries and
        at most five, each logged; C{GET /acme} shows the last error.
        """
        self.cwd = os.path.abspath(self.mktemp())
        os.makedirs(self.cwd)
        self.ports = {}
        yield self.start_proxy(unused_port(), "")
        tries = yield self.watch_retries()
        self.assertGreaterEqual(tries, 2, self.proxy.output)
        self.assertLessEqual(tries, MOST_TRIES, self.proxy.output)
        status = yield threads.deferToThread(self.acme_status)
        self.assertTrue(status["stand_in"])
        self.assertGreaterEqual(status["failures"], 2)
        self.assertTrue(status["last_error"])

    @defer.inlineCallbacks
    def test_ca_refuses_serving_goes_on_and_retries_back_off(self):
        """
        With a CA that refuses the name (pebble's block list), the proxy
        serves its stand-in all along and retries with the same back-off
        (at least two tries, at most five in 12 seconds); C{GET /acme}
        shows what the CA said.
        """
        yield self.start_pebble(domainBlocklist=["example.test"])
        yield self.start_proxy(self.ports["pebble"], self.ca_file)
        tries = yield self.watch_retries()
        self.assertGreaterEqual(tries, 2, self.proxy.output)
        self.assertLessEqual(tries, MOST_TRIES, self.proxy.output)
        status = yield threads.deferToThread(self.acme_status)
        self.assertTrue(status["stand_in"])
        self.assertIn("rejectedIdentifier", status["last_error"])

    @defer.inlineCallbacks
    def test_renewal_served_without_restart_or_dropped_connections(self):
        """
        A certificate renewed (pebble's live 30 seconds, so they fall due
        after about 20) is served to new connections by the same process,
        without a restart, while a connection opened before the renewal
        goes on being answered on the certificate it began with.
        """
        yield self.start_pebble(certificateValidityPeriod=30)
        yield self.start_proxy(self.ports["pebble"], self.ca_file)
        root = self.pebble_root()
        first = yield self.until(lambda: served_certificate(self.ports["https"], root),
                                 "certificate from pebble", 60)
        client = yield threads.deferToThread(_Client, self.ports["https"])
        self.addCleanup(client.raw.close)
        self.assertEqual(client.certificate, first)
        self.assertEqual((yield threads.deferToThread(client.get)), 200)

        def renewed():
            served = served_certificate(self.ports["https"], root)
            return served if served not in (None, first) else None

        second = yield self.until(renewed, "renewed certificate", 90)
        self.assertNotEqual(second, first)
        self.assertEqual((yield threads.deferToThread(client.get)), 200)
        self.assertEqual(client.raw.sock.getpeercert(binary_form=True), first)
        self.assertIsNone(self.proxy.exit_reason)
        # The line is logged once the certificate is in place: perhaps not read yet.
        yield self.until(lambda: self.proxy.output.count(b"renewed") >= 2,
                         "second line saying it renewed")
