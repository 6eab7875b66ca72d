# -*- test-case-name: tests.test_dns -*-
"""
The DNS front: an authoritative name server over UDP and TCP on one port.

A C{protocol = "dns"} listener answers for the zones of the C{[dns]}
section (L{twistproxy.dns.zone}) and for nothing else: a question outside
them is REFUSED, since it is not a resolver.  Messages are decoded and
encoded by C{twisted.names.dns}; L{DNSFront.answer} turns the bytes of one
query into the bytes of its response (or C{None}: dropped), the same for
both transports, so everything below is tested in memory.

GSLB names are answered from an upstream group: the client is placed by
the configured locator (C{[locator]}), from its EDNS Client Subnet option
(RFC 7871) when the resolver sends one, else from the resolver's own
address; the addresses are then the available servers of the group
nearest to it, with the spill-over of HTTP locality
(L{LocalityPicker.nearest}), weighted, at most the record's C{answers} of
them.  An answer that depends on where the client is carries an ECS scope
of the source prefix it was given (it holds for that whole subnet); any
other carries scope 0.  When no server of the group is available, the
answer names the group's servers all the same, nearest first, as a DNS
answer with nothing in it helps nobody.

What keeps it a good citizen:

  - EDNS0 (RFC 6891): the response fits the client's UDP payload size,
    capped at C{max_udp_size}, or 512 bytes without EDNS; a response that
    does not fit is sent truncated (TC, the question only), and the client
    asks again over TCP, where any size goes.
  - ANY gets one RRset (RFC 8482), zone transfers (AXFR, IXFR) only over
    TCP and only to C{allow_transfer}.
  - Response rate limiting: at most C{rate_limit} UDP responses per second
    to one client network (an IPv4 /24, an IPv6 /56); beyond it, every
    second query gets an empty truncated answer (so that a real client
    retries over TCP) and the others none, so the server cannot be used
    to amplify a flood at a spoofed address.
  - A query that cannot be decoded gets FORMERR when its header can be
    read, and is dropped otherwise; responses are never answered.
"""

from __future__ import annotations

import ipaddress
import random as _random
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import fail, gatherResults, maybeDeferred, succeed
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.names import dns
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

from twistproxy.config import DNS, Locality
from twistproxy.dns.zone import CAA, TXTRecords, Zones
from twistproxy.stream.tcp import StreamInfo
from twistproxy.stream.udp import MAX_DATAGRAM, UDPEndpoint
from twistproxy.upstream.locality import LocalityPicker
from twistproxy.net import TrustedProxies, parse_address

#: The EDNS option code of Client Subnet (RFC 7871).
CLIENT_SUBNET = 8
#: The UDP payload size without EDNS (RFC 1035).
CLASSIC_UDP_SIZE = 512
#: The most answers kept encoded (the table is emptied when it is full).
CACHE_SIZE = 10000
#: Seconds an idle TCP connection is kept (RFC 7766 asks for a few).
TCP_IDLE = 10.0
_TRANSFERS = (dns.AXFR, dns.IXFR)
_FAMILIES = {1: (ipaddress.IPv4Address, 4), 2: (ipaddress.IPv6Address, 16)}


class ClientSubnet:
    """
    An EDNS Client Subnet option of a query.

    @ivar family: 1 (IPv4) or 2 (IPv6).
    @ivar source: The source prefix length.
    @ivar address: The subnet's address, as text.
    """

    __slots__ = ("family", "source", "address", "raw")

    def __init__(self, family: int, source: int, address: str, raw: bytes) -> None:
        self.family = family
        self.source = source
        self.address = address
        self.raw = raw

    @classmethod
    def parse(cls, data: bytes) -> "ClientSubnet":
        """
        @raises ValueError: when the option is malformed (RFC 7871 section
            7.1.2: the answer is FORMERR).
        """
        if len(data) < 4:
            raise ValueError("short option")
        family, source, scope = int.from_bytes(data[:2], "big"), data[2], data[3]
        if family not in _FAMILIES or scope != 0:
            raise ValueError("bad family or scope")
        kind, size = _FAMILIES[family]
        raw = data[4:]
        if source > size * 8 or len(raw) != (source + 7) // 8:
            raise ValueError("bad prefix")
        padded = int.from_bytes(raw.ljust(size, b"\0"), "big")
        if padded & ((1 << (size * 8 - source)) - 1):
            raise ValueError("bits set after the prefix")
        return cls(family, source, str(kind(padded)), raw)

    def option(self, scope: int) -> dns._OPTVariableOption:
        """
        The option of the response: the query's, with C{scope}.
        """
        head = self.family.to_bytes(2, "big") + bytes([self.source, scope])
        return dns._OPTVariableOption(CLIENT_SUBNET, head + self.raw)


class RateLimit:
    """
    Responses per second per client network, counted in one-second
    windows on the injected clock (the table is emptied each second, so
    it never holds more networks than sent queries in a second).
    """

    def __init__(self, clock, per_second: int) -> None:
        self._clock = clock
        self._per_second = per_second
        self._window = -1
        self._counts: Dict[Tuple[int, int], int] = {}

    def count(self, address: str) -> int:
        """
        Count a response to C{address}.

        @return: How far over the limit it is: 0 when it may be sent.
        """
        parsed = parse_address(address)
        if parsed is None:
            return 0
        window = int(self._clock.seconds())
        if window != self._window:
            self._window, self._counts = window, {}
        number, v6 = parsed
        key = (v6, number >> (72 if v6 else 8))
        seen = self._counts.get(key, 0) + 1
        self._counts[key] = seen
        return max(0, seen - self._per_second)


class DNSFront(DatagramProtocol):
    """
    The protocol of one C{dns} listener: the UDP port's protocol, and the
    answering engine of its TCP connections (L{tcp_factory}).

    @ivar counts: Responses by C{(zone, type, rcode)}; the zone is C{''}
        when the question is in none.
    @ivar sites: How often each address was in an answer, by C{(GSLB
        name, address)}.
    @ivar dropped: Queries not answered: undecodable, or over the rate limit.
    @ivar refused: Questions answered REFUSED.
    @ivar connections: The open TCP connections.
    """

    log = Logger()
    noisy = False

    def __init__(self, reactor, listener: str, config: DNS, groups: Dict[str, Any],
                 locality: Locality, locator: Callable[[], Any],
                 random: Callable[[], float] = _random.random,
                 texts: Optional[TXTRecords] = None) -> None:
        """
        @param groups: The upstream groups by name (their backends' states
            are read at each query).
        @param locator: Returns the current L{ILocator}, or C{None}.
        @param texts: The TXT records set at run time (shared by the
            listeners of a service).
        @param random: For the weighted choices; seed it in tests.
        """
        self.reactor = reactor
        self.listener = listener
        self.texts = texts if texts is not None else TXTRecords()
        self._texts_version = self.texts.version
        self._locator = locator
        self._random = random
        self.counts: Dict[Tuple[str, str, str], int] = {}
        self.sites: Dict[Tuple[str, str], int] = {}
        self.dropped = 0
        self.refused = 0
        self.connections: Set["DNSStream"] = set()
        self.tcp_factory = Factory.forProtocol(lambda: DNSStream(self))
        self.tcp_factory.noisy = False
        self.configure_dns(config, groups, locality)

    def configure_dns(self, config: DNS, groups: Dict[str, Any], locality: Locality) -> None:
        """
        Answer from these zones, groups and locality settings from now on.
        """
        self.config = config
        self.zones = Zones(config.zones)
        self.groups = groups
        self.locality = locality
        self._transfer = TrustedProxies(config.allow_transfer)
        self._limit = RateLimit(self.reactor, config.rate_limit) if config.rate_limit else None
        self._pickers: Dict[Tuple[str, int],
                            Tuple[Tuple[Any, ...], Optional[LocalityPicker]]] = {}
        # The servers of each picker, in order.
        self._members: Dict[LocalityPicker, Tuple[Any, ...]] = {}
        # Which servers of each GSLB name's group were available, by
        # (name, type), at its last query.
        self._states: Dict[Tuple[str, int], Tuple[bool, ...]] = {}
        # Encoded answers to the questions whose answer does not depend on
        # the client, without their id: by (tcp, query without its id).
        self._cache: Dict[Tuple[bool, bytes], Tuple[bytes, Tuple[str, str, str]]] = {}

    def configure(self, config, forwarder) -> None:
        """
        Queries from now on use a reloaded configuration.
        """
        self.configure_dns(config.dns, forwarder.groups, config.locality)

    def figures(self) -> List[Dict[str, Any]]:
        """
        What the metrics read of it (see L{ProxyMetrics}'s C{streams}).
        """
        listener = self.listener
        rows: List[Dict[str, Any]] = [{"listener": listener, "protocol": "dns",
                                       "open": len(self.connections),
                                       "dropped_queries": self.dropped}]
        rows.extend({"listener": listener, "zone": zone, "type": kind, "rcode": rcode,
                     "responses": n} for (zone, kind, rcode), n in self.counts.items())
        rows.extend({"listener": listener, "name": name, "address": address, "answers": n}
                    for (name, address), n in self.sites.items())
        return rows

    def drain(self):
        self.abort_all()
        return succeed(None)

    def abort_all(self) -> None:
        for connection in list(self.connections):
            connection.transport.abortConnection()

    # Transports

    def datagramReceived(self, data: bytes, addr) -> None:
        response = self.safe_answer(data, addr[0], tcp=False)
        if response is not None:
            self.transport.write(response, addr)

    def safe_answer(self, data: bytes, client: str, tcp: bool) -> Optional[bytes]:
        """
        L{answer}, with a mistake of ours logged and the query dropped,
        rather than raised into the transport.
        """
        try:
            return self.answer(data, client, tcp)
        except Exception:
            self.dropped += 1
            self.log.failure("DNS listener {listener}: cannot answer a query from {client}",
                             listener=self.listener, client=client)
            return None

    # The answer

    def answer(self, data: bytes, client: str, tcp: bool) -> Optional[bytes]:
        """
        The response to one query.

        @param data: The query as received (without TCP's length prefix).
        @param client: The address it came from.
        @param tcp: Whether it came over TCP (no size limit, transfers).
        @return: The response's bytes, or C{None} to send nothing.
        """
        if not tcp and self._limit is not None:
            over = self._limit.count(client)
            if over:
                self.dropped += 1
                if over % 2:
                    return None
                # The slip: an empty truncated answer, so that a client
                # that really asked gets its answer over TCP.
                return self._slip(data)
        if self.texts.version != self._texts_version:
            self._texts_version, self._cache = self.texts.version, {}
        cached = self._cache.get((tcp, data[2:]))
        if cached is not None:
            response, key = cached
            self.counts[key] += 1
            return data[:2] + response
        query = dns.Message()
        try:
            query.fromStr(data)
        except Exception:
            if len(data) < 12 or data[2] & 0x80:
                self.dropped += 1
                return None
            return self._encode(self._reply_to(data[:2], dns.EFORMAT), None, tcp)
        if query.answer:
            self.dropped += 1
            return None
        response, opt, subnet = self._respond(query)
        zone_name, scope, fixed = "", 0, True
        if response.rCode == dns.OK:
            zone_name, scope, fixed = self._resolve(
                query.queries[0], response, client, subnet, tcp)
        if response.rCode == dns.EREFUSED:
            self.refused += 1
        kind = query.queries[0].type if query.queries else 0
        key = (zone_name, _TYPES.get(kind) or str(kind),
               _RCODES.get(response.rCode, str(response.rCode)))
        self.counts[key] = self.counts.get(key, 0) + 1
        extra = [subnet.option(scope)] if subnet is not None else []
        encoded = self._encode(response, opt, tcp, extra)
        if fixed:
            # The same question (in the same case, with the same flags and
            # options) gets the same answer: only the id differs.
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[(tcp, data[2:])] = (encoded[2:], key)
        return encoded

    def _respond(self, query: dns.Message):
        """
        The response to C{query}, with the question and the rcode that
        its header and EDNS options call for.

        @return: The response, the query's OPT record or C{None}, and its
            client subnet option or C{None}.
        """
        options = [r for r in query.additional if r.type == dns.OPT]
        response = dns.Message(id=query.id, answer=1, opCode=query.opCode,
                               recDes=query.recDes, auth=1)
        response.queries = query.queries[:1]
        subnet = opt = None
        try:
            # The options inside the OPT record are decoded only here.
            opt = dns._OPTHeader.fromRRHeader(options[0]) if len(options) == 1 else None
        except Exception:
            response.rCode = dns.EFORMAT
        if response.rCode or len(options) > 1 or len(query.queries) != 1:
            response.rCode = dns.EFORMAT
        elif query.opCode != dns.OP_QUERY:
            response.rCode = dns.ENOTIMP
        elif opt is not None and opt.version > 0:
            # BADVERS (16): the low four bits in the header, the rest in OPT.
            response.rCode = dns.EBADVERSION
        else:
            try:
                subnet = self._client_subnet(opt)
            except ValueError:
                response.rCode = dns.EFORMAT
        return response, opt, subnet

    def _slip(self, data: bytes) -> Optional[bytes]:
        query = dns.Message()
        try:
            query.fromStr(data)
        except Exception:
            return None
        if query.answer:
            return None
        response, opt, _ = self._respond(query)
        response.trunc = 1
        return self._encode(response, opt, False)

    def _reply_to(self, head: bytes, rcode: int) -> dns.Message:
        return dns.Message(id=int.from_bytes(head, "big"), answer=1, rCode=rcode)

    @staticmethod
    def _client_subnet(opt) -> Optional[ClientSubnet]:
        if opt is None:
            return None
        for option in opt.options:
            if option.code == CLIENT_SUBNET:
                return ClientSubnet.parse(option.data)
        return None

    def _resolve(self, question: dns.Query, response: dns.Message, client: str,
                 subnet: Optional[ClientSubnet], tcp: bool) -> Tuple[str, int, bool]:
        """
        Fill C{response} with the answer to C{question}.

        @return: The zone's name, the ECS scope prefix of the answer, and
            whether the same question always gets this answer (not so for
            GSLB names and transfers, which depend on the client).
        """
        name = question.name.name.lower()
        zone = self.zones.find(name) if question.cls in (dns.IN, dns.ANY) else None
        if zone is None:
            response.rCode, response.auth = dns.EREFUSED, 0
            return "", 0, True
        zone_name = zone.config.name
        if question.type in _TRANSFERS:
            if tcp and self._may_transfer(client):
                response.answers = zone.transfer()
            else:
                response.rCode, response.auth = dns.EREFUSED, 0
            return zone_name, 0, False
        found = zone.lookup(name, question.type, self.texts)
        response.rCode = found.rcode
        response.auth = int(found.authoritative)
        response.answers = found.answers
        response.authority = found.authority
        scope = 0
        if found.gslb is not None:
            owner = found.answers[-1].payload.name.name if found.answers else name
            records, scope = self._gslb(found.gslb, owner, question.type, client, subnet)
            if records:
                response.answers = found.answers + records
            else:
                response.authority = [zone.soa]
        return zone_name, scope, found.gslb is None

    def _may_transfer(self, client: str) -> bool:
        # Through net's prefix table: an IPv4 client of a dual-stack
        # socket (::ffff:10.9.1.1) is in an IPv4 network.
        return client in self._transfer

    def _gslb(self, record, owner: bytes, kind: int, client: str,
              subnet: Optional[ClientSubnet]) -> Tuple[List[dns.RRHeader], int]:
        """
        The address records of a GSLB name for a client, and the ECS scope
        they hold for.
        """
        if kind == dns.ANY:
            kind = dns.A
        if kind not in (dns.A, dns.AAAA):
            return [], 0
        picker = self._picker(record.upstream, 4 if kind == dns.A else 6)
        if picker is None:
            return [], 0
        self._watch(record.name, kind, self._members[picker])
        address = subnet.address if subnet is not None and subnet.source else client
        region, zone, local = self._place(picker, address)
        backends = self._choose(picker, region, zone, record.answers)
        sites = self.sites
        for backend in backends:
            site = (record.name, backend.host)
            sites[site] = sites.get(site, 0) + 1
        payload = dns.Record_A if kind == dns.A else dns.Record_AAAA
        records = [dns.RRHeader(owner, kind, ttl=record.ttl, auth=True,
                                payload=payload(b.host, record.ttl)) for b in backends]
        scope = subnet.source if local and subnet is not None else 0
        return records, scope

    def _watch(self, name: str, kind: int, backends: Tuple[Any, ...]) -> None:
        """
        Log when the servers a GSLB name answers from change: a server of
        its group became available or unavailable since the last query.
        """
        state = tuple(b.available for b in backends)
        key = (name, kind)
        last = self._states.get(key)
        self._states[key] = state
        if last is not None and last != state:
            self.log.info(
                "DNS listener {listener}: {name} {kind} now answers from {available}"
                " (unavailable: {unavailable})", listener=self.listener, name=name,
                kind=_TYPES[kind], available=[b.host for b in backends if b.available] or "-",
                unavailable=[b.host for b in backends if not b.available] or "-")

    def _place(self, picker: LocalityPicker, address: str) -> Tuple[str, str, bool]:
        """
        Where the client at C{address} is, and whether that matters: it
        does not without a locator or when the servers are in one region.
        """
        locator = self._locator()
        if locator is None or len(picker.regions) < 2:
            return "", "", False
        region, zone = locator.locate(StreamInfo(address))
        return region, zone, True

    @staticmethod
    def _choose(picker: LocalityPicker, region: str, zone: str, count: int) -> List[Any]:
        backends = picker.nearest(region, zone, count)
        if not backends:
            # Nothing is available: name the nearest all the same.
            backends = [b for level in picker.levels(region, zone) for b in level][:count]
        return backends

    def explain(self, address: str) -> List[Dict[str, Any]]:
        """
        What each GSLB name answers a client at C{address} now, and why:
        for the admin API.

        @return: Per GSLB name and address family: the name, the type, the
            group, where the client is placed, the group's priority levels
            for it (their addresses) with the share of answers each gets
            now, and one answer drawn now.
        """
        rows = []
        for zone_config in self.config.zones:
            for record in zone_config.records:
                if record.type != "GSLB":
                    continue
                for kind, version in (("A", 4), ("AAAA", 6)):
                    picker = self._picker(record.upstream, version)
                    if picker is None:
                        continue
                    region, zone, _ = self._place(picker, address)
                    rows.append({
                        "name": record.name, "type": kind, "upstream": record.upstream,
                        "region": region, "zone": zone,
                        "levels": [[b.host for b in level]
                                   for level in picker.levels(region, zone)],
                        "loads": [round(load, 4) for load in picker.loads(region, zone)],
                        "answer": [b.host for b in self._choose(
                            picker, region, zone, record.answers)],
                    })
        return rows

    def _picker(self, upstream: str, version: int) -> Optional[LocalityPicker]:
        """
        The picker over the group's servers of one address family, built
        again when the group's servers change (a reload).
        """
        group = self.groups.get(upstream)
        if group is None:
            return None
        servers = tuple(group.backends)
        cached = self._pickers.get((upstream, version))
        if cached is not None and cached[0] == servers:
            return cached[1]
        backends = [b for b in servers if ":" in b.host] if version == 6 else [
            b for b in servers if ":" not in b.host]
        # The levels' balancers are never asked: nearest() orders the
        # servers itself.
        picker = None
        if backends:
            picker = LocalityPicker(backends, self.locality.regions, lambda level: None,
                                    self.locality.overprovisioning, self._random)
            self._members[picker] = tuple(backends)
        self._pickers[(upstream, version)] = (servers, picker)
        return picker

    def _encode(self, response: dns.Message, opt, tcp: bool,
                extra: Optional[List[Any]] = None) -> bytes:
        """
        The response's bytes, with an OPT record when the query had one,
        truncated to the question when it does not fit in UDP.
        """
        if opt is not None:
            response.additional.append(dns._OPTHeader(
                udpPayloadSize=self.config.max_udp_size, extendedRCODE=response.rCode >> 4,
                options=extra or []))
        response.rCode &= 0xF
        response.maxSize = 0
        data = response.toStr()
        if tcp:
            return data
        limit = CLASSIC_UDP_SIZE
        if opt is not None:
            limit = max(CLASSIC_UDP_SIZE, min(opt.udpPayloadSize, self.config.max_udp_size))
        if len(data) > limit:
            response.trunc = 1
            response.answers, response.authority = [], []
            response.additional = response.additional[-1:] if opt is not None else []
            data = response.toStr()
        return data


_TYPES = {**dns.QUERY_TYPES, **dns.EXT_QUERIES, CAA: "CAA"}
_RCODES = {dns.OK: "NOERROR", dns.EFORMAT: "FORMERR", dns.ESERVER: "SERVFAIL",
           dns.ENAME: "NXDOMAIN", dns.ENOTIMP: "NOTIMP", dns.EREFUSED: "REFUSED",
           dns.EBADVERSION: "BADVERS"}


class DNSStream(Int16StringReceiver, TimeoutMixin):
    """
    One TCP connection to the DNS front: length-prefixed queries (RFC 1035
    section 4.2.2), answered in order, closed after L{TCP_IDLE} seconds
    without one.
    """

    MAX_LENGTH = 65535

    def __init__(self, front: DNSFront) -> None:
        self.front = front
        self.callLater = front.reactor.callLater

    def connectionMade(self) -> None:
        self.front.connections.add(self)
        self.setTimeout(TCP_IDLE)

    def stringReceived(self, data: bytes) -> None:
        self.resetTimeout()
        response = self.front.safe_answer(data, self.transport.getPeer().host, tcp=True)
        if response is not None:
            self.sendString(response)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        self.front.connections.discard(self)


class DNSPorts:
    """
    The UDP port and the TCP port of one listener, stopped together.
    """

    def __init__(self, udp, tcp) -> None:
        self.udp = udp
        self.tcp = tcp

    def getHost(self):
        return self.udp.getHost()

    def stopListening(self):
        return gatherResults([maybeDeferred(self.udp.stopListening),
                              maybeDeferred(self.tcp.stopListening)])


class DNSEndpoint(UDPEndpoint):
    """
    Listens as a C{udp:PORT[:interface=ADDRESS]} endpoint string says, on
    UDP and on TCP at the same port (one free for both, when it is 0).
    """

    def listen(self, front: DNSFront):
        # With port 0 the system picks the TCP port, whose UDP twin may be
        # taken: another pick is as good.  TCP goes first because a UDP
        # port that cannot bind has not touched its protocol yet.
        for attempt in range(1 if self.port else _PICKS):
            try:
                tcp = self.reactor.listenTCP(self.port, front.tcp_factory,
                                             interface=self.interface)
            except Exception:
                return fail()
            try:
                udp = self.reactor.listenUDP(tcp.getHost().port, front,
                                             interface=self.interface,
                                             maxPacketSize=MAX_DATAGRAM)
            except Exception:
                failure = Failure()
                tcp.stopListening()
                continue
            return succeed(DNSPorts(udp, tcp))
        return fail(failure)


# How many ports to try for an endpoint with port 0.
_PICKS = 10
