"""
Tests for the configuration of the DNS front: C{protocol = "dns"} listeners
and the C{[dns]} section (L{twistproxy.config}).
"""

from __future__ import annotations

import json

from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import DNSRecord, ConfigError, parse
from twistproxy.dns.server import DNSFront
from twistproxy.service import ProxyService

BASE = """
[listeners.dns]
protocol = "dns"
endpoint = "udp:5353"
{listener}

[upstreams.sites]
servers = [{servers}]

{dns}
"""

ZONE = """
[dns]
{options}

[[dns.zones]]
name = "example.test"
soa = {{ mname = "ns1", rname = "hostmaster.example.test." }}
records = [{records}]
"""


def _text(records: str = "", options: str = "", listener: str = "",
          servers: str = '"tcp://192.0.2.1:443"') -> str:
    return BASE.format(listener=listener, servers=servers,
                       dns=ZONE.format(options=options, records=records))


class DNSConfigTests(SynchronousTestCase):
    """
    What the [dns] section accepts and refuses, with the path of the fault.
    """

    def error(self, text: str) -> ConfigError:
        with self.assertRaises(ConfigError) as caught:
            parse(text)
        return caught.exception

    def test_zone(self) -> None:
        """
        Names are made absolute and lower-case ('@' is the apex, a final dot
        makes a name absolute), values are checked and normalised, and the
        SOA's numbers have defaults.
        """
        config = parse(_text(
            '{ name = "WWW", type = "a", value = "192.0.2.7" },'
            '{ name = "@", type = "MX", value = "10 Mail.Example.Org." },'
            '{ name = "v6", type = "AAAA", value = "2001:DB8::1" },'
            '{ name = "@", type = "CAA", value = \'0 issue "ca.example"\' },'
            '{ name = "app", type = "GSLB", upstream = "sites", answers = 3 }',
            options="rate_limit = 0\nallow_transfer = [\"10.0.0.0/8\"]"))
        [zone] = config.dns.zones
        self.assertEqual(zone.soa, ("ns1.example.test", "hostmaster.example.test",
                                    1, 3600, 600, 604800, 60))
        self.assertEqual(zone.records, (
            DNSRecord("www.example.test", "A", 3600, ("192.0.2.7",)),
            DNSRecord("example.test", "MX", 3600, ("10", "mail.example.org")),
            DNSRecord("v6.example.test", "AAAA", 3600, ("2001:db8::1",)),
            DNSRecord("example.test", "CAA", 3600, ("0", "issue", "ca.example")),
            DNSRecord("app.example.test", "GSLB", 30, upstream="sites", answers=3),
        ))
        self.assertEqual((config.dns.rate_limit, config.dns.allow_transfer),
                         (0, ("10.0.0.0/8",)))

    def test_errors(self) -> None:
        """
        Each mistake is reported at its path.
        """
        cases = [
            (_text('{ name = "www", type = "A", value = "::1" }'),
             "dns.zones[0].records[0].value"),
            (_text('{ name = "www", type = "SRV", value = "x" }'),
             "dns.zones[0].records[0].type"),
            (_text('{ name = "www", type = "MX", value = "mail" }'),
             "dns.zones[0].records[0].value"),
            (_text('{ name = "www.example.org.", type = "A", value = "192.0.2.1" }'),
             "dns.zones[0].records[0].name"),
            (_text('{ name = "bad name", type = "A", value = "192.0.2.1" }'),
             "dns.zones[0].records[0].name"),
            (_text('{ name = "www", type = "CNAME", value = "a" },'
                   '{ name = "www", type = "TXT", value = "b" }'),
             "dns.zones[0].records[1]"),
            (_text('{ name = "@", type = "CNAME", value = "a.example.org." }'),
             "dns.zones[0].records[0]"),
            (_text('{ name = "www", type = "GSLB", upstream = "nope" }'),
             "dns.zones[0].records[0].upstream"),
            (_text('{ name = "www", type = "GSLB", upstream = "sites" }',
                   servers='"tcp://backend.example:443"'),
             "dns.zones[0].records[0].upstream"),
            (_text('{ name = "www", type = "A", value = "192.0.2.1", upstream = "sites" }'),
             "dns.zones[0].records[0].upstream"),
            (_text('{ name = "www", type = "CAA", value = "issue ca" }'),
             "dns.zones[0].records[0].value"),
            (_text('{ name = "www", type = "TXT", value = [] }'),
             "dns.zones[0].records[0].value"),
            (_text('{ name = "www", type = "A", value = "192.0.2.1", ttl = 4294967296 }'),
             "dns.zones[0].records[0].ttl"),
            (_text('{ name = "www", type = "GSLB", upstream = "sites", answers = 100 }'),
             "dns.zones[0].records[0].answers"),
            (_text(options="max_udp_size = 100"), "dns.max_udp_size"),
            (_text(options="allow_transfer = [\"nope\"]"), "dns.allow_transfer[0]"),
            (_text(listener='upstream = "sites"'), "listeners.dns.upstream"),
            (_text(listener='filters = [{ name = "deny" }]'), "listeners.dns.filters"),
            (BASE.format(listener="", servers='"tcp://192.0.2.1:443"', dns=""), "dns"),
        ]
        for text, path in cases:
            self.assertEqual(self.error(text).path, path, text)

    def test_listener(self) -> None:
        """
        A dns listener needs no upstream and is served by a L{DNSFront}
        that answers from the section's zones.
        """
        config = parse(_text('{ name = "www", type = "A", value = "192.0.2.7" }'))
        service = ProxyService(config, MemoryReactorClock())
        front = service.listeners["dns"].factory
        self.assertIsInstance(front, DNSFront)
        self.assertIsNotNone(front.zones.find(b"www.example.test"))


class DNSServiceTests(SynchronousTestCase):
    """
    The DNS front inside a L{ProxyService}: reloads and metrics.
    """

    def service(self, records: str, extra: str = ""):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_text(records) + extra)
        from twistproxy.config import load

        service = ProxyService(load(path), MemoryReactorClock())
        return service, path

    def ask(self, front, name: str) -> dns.Message:
        query = dns.Message(id=1)
        query.addQuery(name.encode("ascii"), dns.A)
        answer = dns.Message()
        answer.fromStr(front.answer(query.toStr(), "192.0.2.9", False))
        return answer

    def test_reload_changes_records(self) -> None:
        """
        A reload that changes only the zones keeps the listener and its
        front, which answers from the new records at once.
        """
        service, path = self.service('{ name = "www", type = "A", value = "192.0.2.7" }')
        front = service.listeners["dns"].factory
        with open(path, "w") as f:
            f.write(_text('{ name = "www", type = "A", value = "192.0.2.8" }'))
        self.assertEqual(service.reload(), [])
        self.assertIs(service.listeners["dns"].factory, front)
        self.assertEqual(self.ask(front, "www.example.test").answers[0].payload.dottedQuad(),
                         "192.0.2.8")

    def test_reload_cannot_switch_protocol_in_place(self) -> None:
        """
        A reload that turns a udp listener into a dns one on the same
        endpoint is refused at the protocol, and the running one stays.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(_text().replace('protocol = "dns"', 'protocol = "udp"\nupstream = "u"')
                    + '\n[upstreams.u]\nservers = ["udp://192.0.2.1:53"]\n')
        from twistproxy.config import load

        service = ProxyService(load(path), MemoryReactorClock())
        old = service.listeners["dns"].factory
        with open(path, "w") as f:
            f.write(_text())
        [problem] = service.reload()
        self.assertIn("listeners.dns.protocol", problem)
        self.assertIs(service.listeners["dns"].factory, old)

    def test_metrics(self) -> None:
        """
        The admin metrics count the front's responses by zone, type and
        rcode, and the addresses of GSLB answers.
        """
        service, _ = self.service('{ name = "www", type = "A", value = "192.0.2.7" },'
                                  '{ name = "app", type = "GSLB", upstream = "sites" }',
                                  '\n[admin]\nendpoint = "tcp:0"\n')
        front = service.listeners["dns"].factory
        self.ask(front, "www.example.test")
        self.ask(front, "app.example.test")
        self.ask(front, "www.example.org")
        text = service.metrics.exposition().decode("utf-8")
        self.assertIn('twistproxy_dns_responses_total{listener="dns",rcode="NOERROR",'
                      'type="A",zone="example.test"} 2.0', text)
        self.assertIn('twistproxy_dns_responses_total{listener="dns",rcode="REFUSED",'
                      'type="A",zone=""} 1.0', text)
        self.assertIn('twistproxy_stream_open_connections{listener="dns",protocol="dns"} 0.0',
                      text)
        self.assertIn('twistproxy_dns_gslb_answers_total{address="192.0.2.1",listener="dns",'
                      'name="app.example.test"} 1.0', text)


class RuntimeTXTTests(SynchronousTestCase):
    """
    TXT records set and removed at run time, in Python and through the
    admin API (ACME DNS-01 challenges).
    """

    def setUp(self) -> None:
        config = parse(_text('{ name = "www", type = "A", value = "192.0.2.7" }'))
        self.service = ProxyService(config, MemoryReactorClock())
        self.front = self.service.listeners["dns"].factory
        from treq.testing import StubTreq

        from twistproxy.admin import AdminResource

        self.treq = StubTreq(AdminResource(self.service, clock=MemoryReactorClock()))

    def ask(self, name: str) -> dns.Message:
        query = dns.Message(id=1)
        query.addQuery(name.encode("ascii"), dns.TXT)
        answer = dns.Message()
        answer.fromStr(self.front.answer(query.toStr(), "192.0.2.9", False))
        return answer

    def admin(self, method: str, path: str, body: bytes = b""):
        response = self.successResultOf(
            self.treq.request(method, "http://admin" + path, data=body or None))
        return response.code, json.loads(self.successResultOf(self.treq.content(response)))

    def test_python_api(self) -> None:
        """
        A name set through C{service.dns_texts} exists with its TXT records
        (one per value) from the next query, also one asked before (no
        stale answer is kept), and the names above it stop being NXDOMAIN;
        once removed, it is NXDOMAIN again.
        """
        name = "_acme-challenge.app.example.test"
        self.assertEqual(self.ask(name).rCode, dns.ENAME)
        self.assertIsNone(self.successResultOf(
            self.service.dns_texts.set("_ACME-challenge.app.example.test.", ("one", "two"), ttl=5)))
        answer = self.ask(name)
        self.assertEqual(sorted(r.payload.data[0] for r in answer.answers), [b"one", b"two"])
        self.assertEqual({r.ttl for r in answer.answers}, {5})
        above = self.ask("app.example.test")
        self.assertEqual((above.rCode, above.answers), (dns.OK, []))
        self.assertIs(self.successResultOf(self.service.dns_texts.remove(name)), True)
        self.assertEqual(self.ask(name).rCode, dns.ENAME)

    def test_admin_api(self) -> None:
        """
        C{PUT /dns/txt/NAME} sets, C{GET /dns/txt} lists (with the seconds
        left of the record's lifetime, an hour by default) and C{DELETE}
        removes; a name outside the zones is 404, a bad body 400.
        """
        name = "_acme-challenge.example.test"
        code, body = self.admin("PUT", f"/dns/txt/{name}", b'{"values": ["token"]}')
        self.assertEqual((code, body), (200, {"name": name, "values": ["token"], "ttl": 60,
                                              "lifetime": 3600}))
        self.assertEqual(self.ask(name).answers[0].payload.data, [b"token"])
        self.assertEqual(self.admin("GET", "/dns/txt"), (200, {"records": {name: {
            "values": ["token"], "ttl": 60, "expires_in": 3600}}}))
        self.assertEqual(self.admin("DELETE", f"/dns/txt/{name}")[0], 200)
        self.assertEqual(self.admin("DELETE", f"/dns/txt/{name}")[0], 404)
        self.assertEqual(self.admin("PUT", "/dns/txt/x.example.org", b'{"values": ["a"]}')[0],
                         404)
        self.assertEqual(self.admin("PUT", f"/dns/txt/{name}", b'{"values": "a"}')[0], 400)
        self.assertEqual(self.admin("PUT", f"/dns/txt/{name}",
                                    b'{"values": ["a"], "lifetime": 0}')[0], 400)
        self.assertEqual(self.ask(name).rCode, dns.ENAME)


class ExplainTests(SynchronousTestCase):
    """
    C{GET /dns/gslb?client=ADDRESS} on the admin API.
    """

    def test_explain(self) -> None:
        """
        For each GSLB name, the client's place, the group's levels for it
        with their shares, and an answer; a server down moves the share
        and the answer to the next region.  Without a client address, 400.
        """
        text = _text('{ name = "www", type = "GSLB", upstream = "sites" }',
                     servers='{ url = "tcp://192.0.2.1:443", region = "eu" }, '
                             '{ url = "tcp://192.0.2.2:443", region = "us" }')
        text += ('\n[locator]\ntype = "cidr"\nnetworks = { "10.2.0.0/16" = "us" }\n'
                 '[locality]\nregions = ["eu", "us"]\n')
        service = ProxyService(parse(text), MemoryReactorClock())
        from treq.testing import StubTreq

        from twistproxy.admin import AdminResource

        treq = StubTreq(AdminResource(service, clock=MemoryReactorClock()))

        def get(path):
            response = self.successResultOf(treq.get("http://admin" + path))
            return response.code, json.loads(self.successResultOf(treq.content(response)))

        code, body = get("/dns/gslb?client=10.2.0.9")
        self.assertEqual(code, 200)
        self.assertEqual(body["names"], [{
            "name": "www.example.test", "type": "A", "upstream": "sites", "region": "us",
            "zone": "", "levels": [["192.0.2.2"], ["192.0.2.1"]], "loads": [1.0, 0.0],
            "answer": ["192.0.2.2"]}])
        us = service.forwarder.groups["sites"].backends[1]
        us.healthy = False
        us.refresh()
        [row] = get("/dns/gslb?client=10.2.0.9")[1]["names"]
        self.assertEqual((row["loads"], row["answer"]), ([0.0, 1.0], ["192.0.2.1"]))
        self.assertEqual(get("/dns/gslb")[0], 400)
