# -*- test-case-name: tests.test_e2e_dns -*-
"""
End-to-end tests of the DNS front: the installed proxy, run by C{twistd} as
a child process, asked over loopback by C{dig} (Debian's C{dnsutils}) and by
C{twisted.names.client}.

The GSLB name's servers are loopback addresses (C{127.0.0.2} in
C{eu-west}, C{127.0.0.3} in C{us-east}) where the test listens for the
proxy's TCP health checks; stopping one of those listeners takes its
region out of the answers.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time

from twisted.internet import defer, protocol, reactor, task, threads
from twisted.internet.utils import getProcessOutput
from twisted.names import client as dns_client, dns, error
from twisted.trial.unittest import TestCase

from tests.e2e_support import HOST, WatchedProxyProcess, write_config

CONFIG = """
[listeners.dns]
protocol = "dns"
endpoint = "udp:0:interface={host}"

[upstreams.sites]
servers = [
  {{ url = "tcp://127.0.0.2:{eu}", region = "eu-west" }},
  {{ url = "tcp://127.0.0.3:{us}", region = "us-east" }},
]
health = {{ type = "tcp", interval = 0.2, timeout = 1, fall = 1, rise = 1 }}

[upstreams.sites6]
servers = [
  {{ url = "tcp://[2001:db8:1::1]:443", region = "eu-west" }},
  {{ url = "tcp://[2001:db8:2::1]:443", region = "us-east" }},
]

[locator]
type = "cidr"
networks = {{ "10.1.0.0/16" = "eu-west", "10.2.0.0/16" = "us-east" }}

[locality]
regions = ["eu-west", "us-east"]

[dns]
rate_limit = 20

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster", minimum = 30 }}
records = [
  {{ name = "@", type = "NS", value = "ns1" }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "www", type = "GSLB", upstream = "sites", ttl = 5 }},
  {{ name = "six", type = "GSLB", upstream = "sites6", ttl = 5 }},
  {{ name = "big", type = "TXT", value = [{big}] }},
]
"""


class DNSEndToEndTests(TestCase):
    """
    The installed proxy with a C{protocol = "dns"} listener.
    """

    timeout = 90
    if shutil.which("dig") is None:
        skip = "dig (Debian's dnsutils) is not installed"

    def health_target(self, host: str):
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol),
                                 interface=host)
        self.addCleanup(port.stopListening)
        return port

    @defer.inlineCallbacks
    def setUp(self):
        self.eu = self.health_target("127.0.0.2")
        self.us = self.health_target("127.0.0.3")
        cwd = os.path.abspath(self.mktemp())
        big = ", ".join(f'"{"t" * 200}"' for _ in range(6))
        path = write_config(cwd, CONFIG.format(
            host=HOST, eu=self.eu.getHost().port, us=self.us.getHost().port, big=big))
        self.config_path = path
        self.proxy = WatchedProxyProcess(reactor, ["--config", path], cwd)
        self.addCleanup(self.proxy.stop)
        yield self.proxy.start()

    def dig(self, *args: str) -> defer.Deferred:
        return getProcessOutput(
            shutil.which("dig"),
            [f"@{HOST}", "-p", str(self.proxy.port), "+time=5", "+tries=2", *args],
            env=os.environ, errortoo=True,
        ).addCallback(lambda out: out.decode("utf-8", "replace"))

    @staticmethod
    def answers(output: str, kind: str = "A"):
        return sorted(re.findall(rf"\sIN\s+{kind}\s+(\S+)$", output, re.M))

    @defer.inlineCallbacks
    def test_answers_by_client_subnet(self):
        """
        A GSLB name answers each client with its own region's address, A
        and AAAA, placed by the EDNS Client Subnet the resolver sends; the
        answer's scope is the subnet's prefix.
        """
        out = yield self.dig("www.example.test", "A", "+subnet=10.1.2.0/24")
        self.assertEqual(self.answers(out), ["127.0.0.2"], out)
        self.assertIn("CLIENT-SUBNET: 10.1.2.0/24/24", out)
        out = yield self.dig("www.example.test", "A", "+subnet=10.2.2.0/24")
        self.assertEqual(self.answers(out), ["127.0.0.3"], out)
        out = yield self.dig("SIX.EXAMPLE.TEST", "AAAA", "+subnet=10.2.2.0/24")
        self.assertEqual(self.answers(out, "AAAA"), ["2001:db8:2::1"], out)
        self.assertIn("flags: qr aa", out)

    @defer.inlineCallbacks
    def test_failover(self):
        """
        When the health checks of a region's server fail, its clients get
        the next region's address within a few health intervals.
        """
        out = yield self.dig("www.example.test", "+subnet=10.1.0.0/24")
        self.assertEqual(self.answers(out), ["127.0.0.2"], out)
        yield self.eu.stopListening()
        deadline = time.monotonic() + 20
        while True:
            out = yield self.dig("www.example.test", "+subnet=10.1.0.0/24")
            if self.answers(out) == ["127.0.0.3"] or time.monotonic() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.answers(out), ["127.0.0.3"], out)

    @defer.inlineCallbacks
    def test_truncated_then_tcp(self):
        """
        An answer larger than a UDP response may be comes truncated (TC),
        and dig gets it whole by asking again over TCP.
        """
        out = yield self.dig("big.example.test", "TXT", "+noedns", "+ignore")
        self.assertIn(" tc", out.split("flags:")[1].split(";")[0], out)
        self.assertEqual(self.answers(out, "TXT"), [], out)
        out = yield self.dig("big.example.test", "TXT", "+noedns")
        self.assertIn("Truncated, retrying in TCP mode", out)
        self.assertIn("ANSWER: 1,", out)
        self.assertIn("(TCP)", out)

    @defer.inlineCallbacks
    def test_negative_answers(self):
        """
        A name outside the zones is REFUSED; a missing name is NXDOMAIN and
        a missing type NODATA, both with the zone's SOA as authority;
        AXFR is refused.
        """
        out = yield self.dig("www.example.org")
        self.assertIn("status: REFUSED", out)
        out = yield self.dig("nothing.example.test")
        self.assertIn("status: NXDOMAIN", out)
        self.assertRegex(out, r"AUTHORITY SECTION:\nexample\.test\.\s+30\s+IN\s+SOA")
        out = yield self.dig("ns1.example.test", "MX")
        self.assertIn("status: NOERROR", out)
        self.assertIn("ANSWER: 0, AUTHORITY: 1", out)
        out = yield self.dig("example.test", "AXFR")
        self.assertIn("Transfer failed", out)

    @defer.inlineCallbacks
    def test_twisted_names_client(self):
        """
        twisted.names' own resolver gets the records, and NXDOMAIN as a
        DomainError.
        """
        resolver = dns_client.Resolver(servers=[(HOST, self.proxy.port)], reactor=reactor)
        answers, authority, _ = yield resolver.lookupAddress("ns1.example.test")
        self.assertEqual([a.payload.dottedQuad() for a in answers], ["127.0.0.1"])
        answers, _, _ = yield resolver.lookupAddress("www.example.test")
        self.assertEqual(len(answers), 1)
        self.assertEqual(answers[0].type, dns.A)
        yield self.assertFailure(resolver.lookupAddress("nothing.example.test"),
                                 error.DNSNameError)

    @defer.inlineCallbacks
    def test_rate_limit(self):
        """
        A burst of UDP queries from one network gets at most C{rate_limit}
        full answers a second; of the rest, some get an empty truncated
        answer (so that a real client retries over TCP) and the others
        none.
        """
        message = dns.Message(id=9)
        message.addQuery(b"ns1.example.test", dns.A)
        query = message.toStr()

        def burst():
            full = truncated = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                start = time.monotonic()
                for _ in range(100):
                    s.sendto(query, (HOST, self.proxy.port))
                elapsed = time.monotonic() - start
                try:
                    while True:
                        answer = dns.Message()
                        answer.fromStr(s.recv(4096))
                        full += bool(answer.answers)
                        truncated += bool(answer.trunc)
                except socket.timeout:
                    pass
            return full, truncated, elapsed

        full, truncated, elapsed = yield threads.deferToThread(burst)
        self.assertLessEqual(full, 20 * (int(elapsed) + 2))
        self.assertGreater(truncated, 0)
        self.assertLess(full + truncated, 100)

    @defer.inlineCallbacks
    def test_reload(self):
        """
        A reload (SIGHUP) changes the records from the next query on, on
        the same sockets.
        """
        out = yield self.dig("ns1.example.test")
        self.assertEqual(self.answers(out), ["127.0.0.1"], out)
        with open(self.config_path) as f:
            text = f.read()
        with open(self.config_path, "w") as f:
            f.write(text.replace('value = "127.0.0.1"', 'value = "127.0.0.9"'))
        since = time.monotonic()
        self.proxy.signal("HUP")
        yield self.proxy.wait_for_line("configuration reloaded", since=since, timeout=20)
        out = yield self.dig("ns1.example.test")
        self.assertEqual(self.answers(out), ["127.0.0.9"], out)
        out = yield self.dig("ns1.example.test", "+tcp")
        self.assertEqual(self.answers(out), ["127.0.0.9"], out)
