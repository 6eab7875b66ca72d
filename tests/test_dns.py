"""
Tests for the authoritative DNS front (L{twistproxy.dns}): queries and
answers as C{twisted.names} messages, in memory.
"""

from __future__ import annotations

import random
from typing import List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import parse
from twistproxy.dns.server import (
    CLIENT_SUBNET,
    ClientSubnet,
    DNSEndpoint,
    DNSFront,
    DNSStream,
)
from twistproxy.upstream.locators import build_locator
from twistproxy.upstream.group import UpstreamGroupRuntime

CONFIG = """
[listeners.dns]
protocol = "dns"
endpoint = "udp:5353"

[upstreams.sites]
servers = [
  {{ url = "tcp://192.0.2.10:443", region = "eu-west", zone = "eu-west-1a" }},
  {{ url = "tcp://192.0.2.11:443", region = "eu-west", zone = "eu-west-1b", weight = 3 }},
  {{ url = "tcp://198.51.100.10:443", region = "us-east" }},
  {{ url = "tcp://198.51.100.11:443", region = "us-east" }},
  {{ url = "tcp://[2001:db8::10]:443", region = "us-east" }},
]

[upstreams.flat]
servers = ["tcp://203.0.113.1:443", "tcp://203.0.113.2:443"]

[locality]
regions = ["eu-west", "us-east"]

[dns]
rate_limit = {rate_limit}
allow_transfer = ["10.9.0.0/16"]
max_udp_size = 4096

[[dns.zones]]
name = "Example.TEST"
soa = {{ mname = "ns1", rname = "hostmaster", serial = 7, minimum = 45 }}
records = [
  {{ name = "@", type = "NS", value = "ns1" }},
  {{ name = "ns1", type = "A", value = "192.0.2.53" }},
  {{ name = "ns1", type = "AAAA", value = "2001:db8::53" }},
  {{ name = "@", type = "MX", value = "10 mail" }},
  {{ name = "@", type = "TXT", value = ["v=spf1 -all", "{long}"] }},
  {{ name = "@", type = "CAA", value = '0 issue "letsencrypt.org"' }},
  {{ name = "www", type = "GSLB", upstream = "sites", answers = 2, ttl = 20 }},
  {{ name = "flat", type = "GSLB", upstream = "flat", answers = 1 }},
  {{ name = "alias", type = "CNAME", value = "www" }},
  {{ name = "out", type = "CNAME", value = "www.example.org." }},
  {{ name = "a.b.deep", type = "A", value = "192.0.2.1" }},
  {{ name = "sub", type = "NS", value = "ns.sub" }},
  {{ name = "big", type = "TXT", value = [{big}] }},
]
"""

LOCATOR = {"networks": {"10.1.0.0/16": "eu-west/eu-west-1a", "10.2.0.0/16": "us-east",
                        "2001:db8:1::/48": "eu-west"}}


def _front(rate_limit: int = 0, locator=True, reactor=None):
    config = parse(CONFIG.format(
        rate_limit=rate_limit, long="x" * 300,
        big=", ".join(f'"{"t" * 200}"' for _ in range(10))))
    groups = {name: UpstreamGroupRuntime(group, lambda backend: None)
              for name, group in config.upstreams.items()}
    located = build_locator("cidr", LOCATOR, "locator") if locator else None
    front = DNSFront(reactor or MemoryReactorClock(), "dns", config.dns, groups,
                     config.locality, lambda: located, random.Random(4).random)
    return front, groups


def _query(name: str, kind: int = dns.A, edns: bool = False, subnet: Optional[bytes] = None,
           size: Optional[int] = None, cls: int = dns.IN, version: int = 0) -> bytes:
    message = dns.Message(id=4321, recDes=1)
    message.queries.append(dns.Query(name, kind, cls))
    if edns or subnet is not None or size is not None or version:
        options = [dns._OPTVariableOption(CLIENT_SUBNET, subnet)] if subnet is not None else []
        message.additional.append(dns._OPTHeader(udpPayloadSize=size or 1232, version=version,
                                                 options=options))
    return message.toStr()


def _decode(data: bytes) -> dns.Message:
    message = dns.Message()
    message.fromStr(data)
    return message


def _addresses(message: dns.Message) -> List[str]:
    return [r.payload.dottedQuad() if r.type == dns.A else r.payload._address
            for r in message.answers if r.type in (dns.A, dns.AAAA)]


def _opt(message: dns.Message) -> dns._OPTHeader:
    [opt] = [r for r in message.additional if r.type == dns.OPT]
    return dns._OPTHeader.fromRRHeader(opt)


def _subnet(address: bytes, source: int, family: int = 1) -> bytes:
    return family.to_bytes(2, "big") + bytes([source, 0]) + address


class AnswerTests(SynchronousTestCase):
    """
    Static records, and the negative answers of an authoritative server.
    """

    def setUp(self) -> None:
        self.front, _ = _front()

    def ask(self, name: str, kind: int = dns.A, client: str = "192.0.2.99",
            tcp: bool = False, **kwargs) -> dns.Message:
        return _decode(self.front.answer(_query(name, kind, **kwargs), client, tcp))

    def test_static_records(self) -> None:
        """
        A, AAAA, MX, TXT and CAA records are answered as configured,
        authoritatively, with the query's id and question.
        """
        a = self.ask("ns1.example.test")
        self.assertEqual((a.id, a.answer, a.auth, a.rCode), (4321, 1, 1, dns.OK))
        self.assertEqual(a.queries[0].name.name, b"ns1.example.test")
        self.assertEqual(_addresses(a), ["192.0.2.53"])
        self.assertEqual(_addresses(self.ask("ns1.example.test", dns.AAAA)), ["2001:db8::53"])
        mx = self.ask("example.test", dns.MX).answers[0].payload
        self.assertEqual((mx.preference, mx.name.name), (10, b"mail.example.test"))
        [txt] = self.ask("example.test", dns.TXT, tcp=True).answers
        # A string over 255 bytes is split into character strings.
        self.assertEqual(txt.payload.data, [b"v=spf1 -all", b"x" * 255, b"x" * 45])
        caa = self.ask("example.test", 257).answers[0]
        self.assertEqual((caa.type, caa.payload.data), (257, b"\x00\x05issueletsencrypt.org"))

    def test_repeated_question(self) -> None:
        """
        A question asked again is answered alike under its own id (the
        answer is kept encoded), and counted each time.
        """
        first = dns.Message(id=1)
        first.addQuery(b"ns1.example.test", dns.A)
        again = dns.Message(id=2)
        again.addQuery(b"ns1.example.test", dns.A)
        one = self.front.answer(first.toStr(), "192.0.2.9", False)
        two = self.front.answer(again.toStr(), "192.0.2.9", False)
        self.assertEqual((one[:2], two[:2]), (b"\x00\x01", b"\x00\x02"))
        self.assertEqual(one[2:], two[2:])
        self.assertEqual(self.front.counts[("example.test", "A", "NOERROR")], 2)

    def test_names_ignore_case(self) -> None:
        """
        Names are matched whatever their case, and the question is echoed
        as it was asked.
        """
        a = self.ask("NS1.Example.Test")
        self.assertEqual(_addresses(a), ["192.0.2.53"])
        self.assertEqual(a.queries[0].name.name, b"NS1.Example.Test")

    def test_nxdomain(self) -> None:
        """
        A name that does not exist is NXDOMAIN, with the zone's SOA in the
        authority section, its TTL the SOA minimum (RFC 2308).
        """
        a = self.ask("nothing.example.test")
        self.assertEqual((a.rCode, a.auth, a.answers), (dns.ENAME, 1, []))
        [soa] = a.authority
        self.assertEqual((soa.type, soa.ttl, soa.payload.serial), (dns.SOA, 45, 7))

    def test_nodata(self) -> None:
        """
        A name with no records of the type asked is NODATA: no error, no
        answer, the SOA in the authority section; so is an empty
        non-terminal (C{b.deep} above C{a.b.deep}, RFC 8020).
        """
        for name in ("ns1.example.test", "b.deep.example.test", "deep.example.test"):
            a = self.ask(name, dns.MX)
            self.assertEqual((a.rCode, a.answers, [r.type for r in a.authority]),
                             (dns.OK, [], [dns.SOA]), name)

    def test_refused_outside_zones(self) -> None:
        """
        A name outside every zone, and a class other than IN, are REFUSED,
        without the AA bit: the front is not a resolver.
        """
        for a in (self.ask("example.org"), self.ask("test"),
                  self.ask("www.example.test", cls=dns.CH)):
            self.assertEqual((a.rCode, a.auth, a.answers), (dns.EREFUSED, 0, []))
        self.assertEqual(self.front.refused, 3)
        self.assertEqual(self.front.counts[("", "A", "REFUSED")], 3)

    def test_cname(self) -> None:
        """
        A CNAME answers any type, followed within the zone; a target
        outside the zone is left to the resolver.
        """
        a = self.ask("alias.example.test")
        self.assertEqual([r.type for r in a.answers], [dns.CNAME, dns.A, dns.A])
        self.assertEqual(a.answers[1].name.name, b"www.example.test")
        out = self.ask("out.example.test")
        self.assertEqual([(r.type, r.payload.name.name) for r in out.answers],
                         [(dns.CNAME, b"www.example.org")])

    def test_delegation(self) -> None:
        """
        Names at and below a delegated subzone get a referral: the NS
        records in the authority section, not authoritative.
        """
        a = self.ask("host.sub.example.test")
        self.assertEqual((a.rCode, a.auth, a.answers), (dns.OK, 0, []))
        self.assertEqual([r.payload.name.name for r in a.authority], [b"ns.sub.example.test"])

    def test_any_is_minimal(self) -> None:
        """
        ANY gets one RRset, not every record of the name (RFC 8482).
        """
        a = self.ask("example.test", dns.ANY)
        self.assertEqual(len({r.type for r in a.answers}), 1)
        self.assertEqual(len(self.ask("ns1.example.test", dns.ANY).answers), 1)

    def test_transfer(self) -> None:
        """
        AXFR is refused over UDP and to clients outside allow_transfer;
        over TCP from them it is the zone between two SOAs.
        """
        for client, tcp in (("10.9.1.1", False), ("192.0.2.99", True)):
            a = self.ask("example.test", dns.AXFR, client=client, tcp=tcp)
            self.assertEqual((a.rCode, a.answers), (dns.EREFUSED, []))
        a = self.ask("example.test", dns.AXFR, client="10.9.1.1", tcp=True)
        self.assertEqual(a.rCode, dns.OK)
        self.assertEqual((a.answers[0].type, a.answers[-1].type), (dns.SOA, dns.SOA))
        self.assertIn(dns.MX, [r.type for r in a.answers])

    def test_transfer_mapped(self) -> None:
        """
        An IPv4 client seen on a dual-stack socket, as an IPv4-mapped IPv6
        address, is inside allow_transfer's IPv4 networks.
        """
        a = self.ask("example.test", dns.AXFR, client="::ffff:10.9.1.1", tcp=True)
        self.assertEqual(a.rCode, dns.OK)
        a = self.ask("example.test", dns.AXFR, client="::ffff:192.0.2.99", tcp=True)
        self.assertEqual(a.rCode, dns.EREFUSED)

    def test_malformed(self) -> None:
        """
        A query that cannot be decoded gets FORMERR when its header is
        readable, and nothing otherwise; a response is never answered; two
        questions are FORMERR; another opcode is NOTIMP.
        """
        good = _query("ns1.example.test")
        a = _decode(self.front.answer(good[:12] + b"\x07garbage", "192.0.2.99", False))
        self.assertEqual((a.id, a.answer, a.rCode), (4321, 1, dns.EFORMAT))
        self.assertIsNone(self.front.answer(b"\x01\x02", "192.0.2.99", False))
        response = bytes([good[0], good[1], good[2] | 0x80]) + good[3:]
        self.assertIsNone(self.front.answer(response, "192.0.2.99", False))
        two = dns.Message(id=1)
        two.addQuery(b"ns1.example.test")
        two.addQuery(b"example.test")
        self.assertEqual(_decode(self.front.answer(two.toStr(), "x", False)).rCode, dns.EFORMAT)
        notify = dns.Message(id=1, opCode=dns.OP_NOTIFY)
        notify.addQuery(b"example.test", dns.SOA)
        self.assertEqual(_decode(self.front.answer(notify.toStr(), "x", False)).rCode,
                         dns.ENOTIMP)
        self.assertEqual(self.front.dropped, 2)

    def test_fuzzed_queries(self) -> None:
        """
        Random bytes, and valid queries with random bytes changed, never
        make the front raise: each gets a response that decodes, or none.
        """
        rng = random.Random(14)
        valid = _query("www.example.test", dns.A, subnet=_subnet(b"\x0a\x01", 16))
        for i in range(3000):
            if i % 2:
                data = bytearray(valid)
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                data = bytes(data[:rng.randint(0, len(data))] if i % 7 == 0 else data)
            else:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
            for tcp in (False, True):
                response = self.front.answer(data, "192.0.2.99", tcp)
                if response is not None:
                    _decode(response)

    def test_mistake_logged(self) -> None:
        """
        Should answering raise, the query is dropped and the failure
        logged, not raised into the transport.
        """
        def broken(*args):
            raise ZeroDivisionError()

        self.front._resolve = broken
        self.assertIsNone(self.front.safe_answer(_query("www.example.test"), "192.0.2.9", False))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.front.dropped, 1)

    def test_edns_version(self) -> None:
        """
        An EDNS version above 0 is answered BADVERS, in an OPT record of
        version 0.
        """
        a = self.ask("ns1.example.test", version=1)
        opt = _opt(a)
        self.assertEqual((opt.extendedRCODE << 4 | a.rCode, opt.version, a.answers),
                         (dns.EBADVERSION, 0, []))


class TruncationTests(SynchronousTestCase):
    """
    UDP answers fit the client's EDNS0 payload size, or 512 bytes.
    """

    def test_truncated_over_udp(self) -> None:
        """
        An answer too large for 512 bytes (no EDNS) or the client's EDNS
        size is sent with TC and the question only; over TCP, or within a
        large enough EDNS size, it is whole.
        """
        front, _ = _front()
        small = _decode(front.answer(_query("big.example.test", dns.TXT), "192.0.2.9", False))
        self.assertEqual((small.trunc, small.answers), (1, []))
        self.assertEqual(small.queries[0].name.name, b"big.example.test")
        edns = front.answer(_query("big.example.test", dns.TXT, size=1232), "192.0.2.9", False)
        self.assertEqual(_decode(edns).trunc, 1)
        self.assertLessEqual(len(edns), 1232)
        self.assertEqual(_opt(_decode(edns)).udpPayloadSize, 4096)
        whole = _decode(front.answer(_query("big.example.test", dns.TXT, size=4096),
                                     "192.0.2.9", False))
        self.assertEqual((whole.trunc, len(whole.answers)), (0, 1))
        tcp = _decode(front.answer(_query("big.example.test", dns.TXT), "192.0.2.9", True))
        self.assertEqual((tcp.trunc, len(tcp.answers[0].payload.data)), (0, 10))

    def test_tcp_connection(self) -> None:
        """
        Over TCP, length-prefixed queries are answered on the connection,
        which closes after an idle while.
        """
        reactor = MemoryReactorClock()
        front, _ = _front(reactor=reactor)
        stream = front.tcp_factory.buildProtocol(None)
        transport = StringTransport()
        stream.makeConnection(transport)
        self.assertIsInstance(stream, DNSStream)
        query = _query("big.example.test", dns.TXT)
        stream.dataReceived(len(query).to_bytes(2, "big") + query)
        data = transport.value()
        self.assertEqual(int.from_bytes(data[:2], "big"), len(data) - 2)
        self.assertEqual(len(_decode(data[2:]).answers), 1)
        self.assertEqual(len(front.connections), 1)
        reactor.advance(11)
        self.assertTrue(transport.disconnecting)


class GSLBTests(SynchronousTestCase):
    """
    GSLB names: the available servers of a group nearest the client.
    """

    def setUp(self) -> None:
        self.front, self.groups = _front()

    def ask(self, name: str = "www.example.test", kind: int = dns.A,
            client: str = "10.1.0.5", **kwargs) -> dns.Message:
        return _decode(self.front.answer(_query(name, kind, **kwargs), client, False))

    def down(self, *hosts: str) -> None:
        for backend in self.groups["sites"].backends:
            if backend.host in hosts:
                backend.healthy = False
                backend.refresh()

    def test_nearest_by_resolver_address(self) -> None:
        """
        Without ECS, the resolver's address places the client: its zone's
        server first, then its region's, at most C{answers} of them, with
        the record's short TTL.
        """
        a = self.ask()
        self.assertEqual(_addresses(a), ["192.0.2.10", "192.0.2.11"])
        self.assertEqual({r.ttl for r in a.answers}, {20})
        self.assertEqual(sorted(_addresses(self.ask(client="10.2.0.5"))),
                         ["198.51.100.10", "198.51.100.11"])

    def test_client_subnet(self) -> None:
        """
        An ECS option places the client by its subnet rather than the
        resolver, and the answer's ECS scope is the source prefix.
        """
        a = self.ask(client="10.1.0.5", subnet=_subnet(b"\x0a\x02\x03", 24))
        self.assertEqual(sorted(_addresses(a)), ["198.51.100.10", "198.51.100.11"])
        [option] = _opt(a).options
        self.assertEqual((option.code, option.data), (CLIENT_SUBNET, b"\x00\x01\x18\x18\x0a\x02\x03"))
        six = self.ask(client="10.2.0.5",
                       subnet=_subnet(b"\x20\x01\x0d\xb8\x00\x01", 48, family=2))
        self.assertEqual(_addresses(six), ["192.0.2.11", "192.0.2.10"])
        self.assertEqual(_opt(six).options[0].data[3], 48)

    def test_scope_zero_when_place_does_not_matter(self) -> None:
        """
        Answers that do not depend on the client carry ECS scope 0: static
        records, and a group without regions.
        """
        for name in ("ns1.example.test", "flat.example.test"):
            a = self.ask(name, subnet=_subnet(b"\x0a\x02\x03", 24))
            self.assertEqual(_opt(a).options[0].data[3], 0, name)
        self.assertEqual(len(_addresses(self.ask("flat.example.test"))), 1)

    def test_bad_client_subnet(self) -> None:
        """
        An ECS option with bits set after its source prefix, or an unknown
        family, is FORMERR (RFC 7871 7.1.2).
        """
        for option in (_subnet(b"\x0a\x02\x03", 20), _subnet(b"\x0a", 8, family=3), b"\x00"):
            self.assertEqual(self.ask(subnet=option).rCode, dns.EFORMAT)
        self.assertRaises(ValueError, ClientSubnet.parse, _subnet(b"\x0a\x02", 24))

    def test_failover(self) -> None:
        """
        When the client's zone is down, the rest of its region answers; when
        its whole region is down, the next region does; when everything is
        down, the nearest servers are named all the same.
        """
        self.down("192.0.2.10")
        self.assertEqual(_addresses(self.ask()), ["192.0.2.11"] + _addresses(self.ask())[1:])
        self.down("192.0.2.11")
        self.assertEqual(sorted(_addresses(self.ask())), ["198.51.100.10", "198.51.100.11"])
        self.down("198.51.100.10", "198.51.100.11")
        self.assertEqual(_addresses(self.ask()), ["192.0.2.10", "192.0.2.11"])

    def test_changes_logged(self) -> None:
        """
        When a server of a GSLB name's group becomes unavailable, the next
        query of that name logs which servers it now answers from.
        """
        self.ask()
        with capturedLogs() as events:
            self.ask()
            self.down("192.0.2.10")
            self.ask()
            self.ask()
        [event] = [e for e in events if "now answers" in e["log_format"]]
        self.assertEqual((event["name"], event["kind"], event["unavailable"]),
                         ("www.example.test", "A", ["192.0.2.10"]))

    def test_weights(self) -> None:
        """
        Within a level, servers come first in proportion to their weights.
        """
        first = [_addresses(self.ask(client="10.1.0.5",
                                     subnet=_subnet(b"\x0a\x03", 16)))[0]
                 for _ in range(400)]
        # Unknown clients start with eu-west: 192.0.2.11 has weight 3 of 4.
        share = first.count("192.0.2.11") / len(first)
        self.assertTrue(0.65 < share < 0.85, share)

    def test_nodata_for_other_types(self) -> None:
        """
        A GSLB name asked for another type, or for a family its group has
        no servers of, is NODATA with the SOA.
        """
        for kind, name in ((dns.MX, "www"), (dns.AAAA, "flat")):
            a = self.ask(f"{name}.example.test", kind)
            self.assertEqual((a.rCode, a.answers, [r.type for r in a.authority]),
                             (dns.OK, [], [dns.SOA]))


class RateLimitTests(SynchronousTestCase):
    """
    Responses per client network and second.
    """

    def test_rate_limit(self) -> None:
        """
        Past the limit, a client network gets every second query answered
        empty with TC and no answer to the others, until the next second;
        another network and TCP are not limited.
        """
        reactor = MemoryReactorClock()
        front, _ = _front(rate_limit=5, reactor=reactor)
        query = _query("ns1.example.test")
        answers = [front.answer(query, f"192.0.2.{i}", False) for i in range(11)]
        self.assertTrue(all(_decode(a).answers for a in answers[:5]))
        slipped = [_decode(a) for a in answers[5:] if a is not None]
        self.assertEqual([(m.trunc, m.answers) for m in slipped], [(1, [])] * 3)
        self.assertEqual(front.dropped, 6)
        self.assertTrue(_decode(front.answer(query, "198.51.100.1", False)).answers)
        self.assertTrue(_decode(front.answer(query, "192.0.2.1", True)).answers)
        reactor.advance(1)
        self.assertTrue(_decode(front.answer(query, "192.0.2.1", False)).answers)


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = False

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self) -> None:
        self.stopped = True


class _Reactor:
    """
    Listens on a port in memory; port 0 gets 40000, 40001 ...; the UDP
    ports in C{busy} are taken.
    """

    def __init__(self, busy=()) -> None:
        self.busy = set(busy)
        self.tcp: List[_Port] = []
        self.udp: List[tuple] = []

    def listenTCP(self, port, factory, interface=""):
        listening = _Port(port or 40000 + len(self.tcp))
        self.tcp.append(listening)
        return listening

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.busy:
            raise CannotListenError(interface, port, OSError("in use"))
        self.udp.append((port, interface, maxPacketSize))
        return _Port(port)


class EndpointTests(SynchronousTestCase):
    """
    L{DNSEndpoint}: UDP and TCP on one port.
    """

    def test_same_port(self) -> None:
        """
        Both sockets listen on the port and interface of the endpoint
        string, UDP taking datagrams of any size.
        """
        reactor = _Reactor()
        front, _ = _front()
        ports = self.successResultOf(
            DNSEndpoint(reactor, "udp:5353:interface=127.0.0.1").listen(front))
        self.assertEqual([p.port for p in reactor.tcp], [5353])
        self.assertEqual(reactor.udp, [(5353, "127.0.0.1", 65535)])
        self.assertEqual(ports.getHost().port, 5353)

    def test_port_zero_tries_again(self) -> None:
        """
        With port 0, when the UDP twin of the TCP port picked is taken, the
        TCP port is closed and another pick tried; with a fixed port, the
        failure is the answer.
        """
        reactor = _Reactor(busy={40000})
        front, _ = _front()
        ports = self.successResultOf(DNSEndpoint(reactor, "udp:0").listen(front))
        self.assertEqual(ports.getHost().port, 40001)
        self.assertTrue(reactor.tcp[0].stopped)
        self.failureResultOf(DNSEndpoint(_Reactor(busy={53}), "udp:53").listen(front),
                             CannotListenError)
