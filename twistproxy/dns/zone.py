# -*- test-case-name: tests.test_dns -*-
"""
The zones of the DNS front, held in memory as C{twisted.names} records.

A L{Zone} answers one question (a name and a type) the way an
authoritative server must (RFC 1034 section 4.3.2, RFC 2308): the records
of that type; a CNAME in place of any type (followed within the zone);
I{NODATA} (no error, no answer, the SOA in the authority section) for a
name that exists, or is an empty non-terminal (RFC 8020), but has no
records of the type; I{NXDOMAIN} with the SOA for a name that does not
exist; a referral (the NS records, not authoritative) for names at or
below a delegation.  Names are compared without regard to case.

A GSLB name has no records of its own: its addresses are chosen for each
query (L{twistproxy.dns.server}), so the zone only says that the name is
one (L{Answer.gslb}).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.names import dns

from twistproxy.config import DNSRecord, DNSZone

#: The record type of CAA (RFC 8659), which C{twisted.names} has no class for.
CAA = 257
# Types whose answer at a CNAME's name is the CNAME itself.
_NOT_CHASED = (dns.CNAME, dns.ANY)
# Enough for any sane chain inside one zone; a loop stops here.
_MAX_CHAIN = 8


def owner_name(name: str) -> str:
    """
    The owner name C{name} (absolute, in any case, with or without the
    final dot) as records are kept: lower case, without the final dot.
    """
    return name.lower().rstrip(".")


def _text(value: str) -> List[bytes]:
    """
    The character strings of one TXT string: at most 255 bytes each.
    """
    data = value.encode("utf-8")
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def _caa(flags: str, tag: str, value: str) -> dns.UnknownRecord:
    tag_bytes = tag.encode("ascii")
    return dns.UnknownRecord(
        bytes([int(flags), len(tag_bytes)]) + tag_bytes + value.encode("utf-8"))


def _payload(record: DNSRecord):
    data, ttl = record.data, record.ttl
    if record.type == "A":
        return dns.Record_A(data[0], ttl)
    if record.type == "AAAA":
        return dns.Record_AAAA(data[0], ttl)
    if record.type == "CNAME":
        return dns.Record_CNAME(data[0], ttl)
    if record.type == "NS":
        return dns.Record_NS(data[0], ttl)
    if record.type == "MX":
        return dns.Record_MX(int(data[0]), data[1], ttl)
    if record.type == "TXT":
        return dns.Record_TXT(*[part for text in data for part in _text(text)], ttl=ttl)
    return _caa(*data)


def _type(name: str) -> int:
    return CAA if name == "CAA" else getattr(dns, name)


class Answer:
    """
    What a zone answers to one question.

    @ivar rcode: C{dns.OK} or C{dns.ENAME} (NXDOMAIN).
    @ivar answers: The answer section (a CNAME chain, then the records).
    @ivar authority: The authority section: the SOA of a negative answer,
        the NS records of a referral.
    @ivar authoritative: False for a referral.
    @ivar gslb: The GSLB record to answer from an upstream group, at the
        end of C{answers}'s chain, or C{None}.
    """

    __slots__ = ("rcode", "answers", "authority", "authoritative", "gslb")

    def __init__(self) -> None:
        self.rcode = dns.OK
        self.answers: List[dns.RRHeader] = []
        self.authority: List[dns.RRHeader] = []
        self.authoritative = True
        self.gslb: Optional[DNSRecord] = None


class Zone:
    """
    One zone, from its configuration.

    @ivar name: The apex, lower-cased, as C{bytes}.
    @ivar soa: The SOA record.
    """

    def __init__(self, config: DNSZone) -> None:
        self.config = config
        self.name = config.name.encode("ascii")
        mname, rname, serial, refresh, retry, expire, minimum = config.soa
        self.soa = dns.RRHeader(
            self.name, dns.SOA, ttl=minimum, auth=True,
            payload=dns.Record_SOA(mname, rname, serial, refresh, retry, expire, minimum,
                                   ttl=minimum))
        self._records: Dict[bytes, Dict[int, List[dns.RRHeader]]] = {}
        self._gslb: Dict[bytes, DNSRecord] = {}
        self._names = {self.name}
        for record in config.records:
            owner = record.name.encode("ascii")
            self._add_name(owner)
            if record.type == "GSLB":
                self._gslb[owner] = record
                continue
            kind = _type(record.type)
            self._records.setdefault(owner, {}).setdefault(kind, []).append(
                dns.RRHeader(owner, kind, ttl=record.ttl, payload=_payload(record), auth=True))
        self._cuts = {name for name, kinds in self._records.items()
                      if dns.NS in kinds and name != self.name}

    def _add_name(self, owner: bytes) -> None:
        # The name and the empty non-terminals between it and the apex.
        while owner != self.name and owner not in self._names:
            self._names.add(owner)
            owner = owner.partition(b".")[2]

    def _cut(self, name: bytes) -> Optional[bytes]:
        """
        The delegation at or above C{name}, if any.
        """
        while self._cuts and name != self.name:
            if name in self._cuts:
                return name
            name = name.partition(b".")[2]
        return None

    def lookup(self, name: bytes, kind: int, texts: Optional["TXTRecords"] = None) -> Answer:
        """
        Answer a question for C{name} (lower-cased, in this zone).

        @param texts: The TXT records set at run time, answered beside the
            zone's own.
        """
        answer = Answer()
        dynamic = texts.records(name) if texts is not None else None
        for _ in range(_MAX_CHAIN):
            cut = self._cut(name)
            if cut is not None:
                if not answer.answers:
                    answer.authoritative = False
                answer.authority = list(self._records[cut][dns.NS])
                return answer
            if name not in self._names and not (texts is not None and texts.exists(name)):
                if not answer.answers:
                    answer.rcode = dns.ENAME
                answer.authority = [self.soa]
                return answer
            gslb = self._gslb.get(name)
            if gslb is not None:
                answer.gslb = gslb
                return answer
            kinds = self._records.get(name, {})
            if dynamic:
                kinds = dict(kinds)
                kinds[dns.TXT] = kinds.get(dns.TXT, []) + dynamic
            cname = kinds.get(dns.CNAME)
            if cname is not None and kind not in _NOT_CHASED:
                answer.answers.extend(cname)
                target = cname[0].payload.name.name
                if not self.contains(target):
                    return answer
                name = target
                continue
            if kind == dns.ANY:
                # RFC 8482: one RRset of what there is, not all of them.
                found = next(iter(kinds.values()), None) if name != self.name else [self.soa]
            elif kind == dns.SOA and name == self.name:
                found = [self.soa]
            else:
                found = kinds.get(kind)
            if found:
                answer.answers.extend(found)
            else:
                answer.authority = [self.soa]
            return answer
        return answer

    def contains(self, name: bytes) -> bool:
        return name == self.name or name.endswith(b"." + self.name)

    def transfer(self) -> List[dns.RRHeader]:
        """
        The zone's records for AXFR (RFC 5936): the SOA, the static
        records, the SOA again.  GSLB names, which have no fixed records,
        are left out.
        """
        records = [self.soa]
        for kinds in self._records.values():
            for rrset in kinds.values():
                records.extend(rrset)
        return records + [self.soa]


class TXTRecords:
    """
    TXT records set and removed at run time, beside the zones' own: what
    an ACME DNS-01 challenge needs (C{_acme-challenge.www.example.com}).
    They outlive configuration reloads; L{twistproxy.dns.texts} keeps them
    (and shares them through Redis).

    @ivar version: Goes up at every change, so that answers kept encoded
        are known to be stale.
    """

    def __init__(self) -> None:
        self._records: Dict[bytes, List[dns.RRHeader]] = {}
        self.version = 0

    def set(self, name: str, values: Tuple[str, ...], ttl: int = 60) -> None:
        """
        Answer TXT queries for C{name} with one record per value (replacing
        those set before), until L{remove}d.

        @param name: An absolute name, in any case, with or without the
            final dot.
        """
        owner = owner_name(name)
        data = owner.encode("ascii")
        self._records[data] = [
            dns.RRHeader(data, dns.TXT, ttl=ttl, auth=True,
                         payload=dns.Record_TXT(*_text(value), ttl=ttl))
            for value in values]
        self.version += 1

    def remove(self, name: str) -> bool:
        """
        Forget the TXT records set for C{name}.

        @return: Whether there were any.
        """
        owner = owner_name(name)
        found = self._records.pop(owner.encode("ascii"), None) is not None
        self.version += 1
        return found

    def records(self, name: bytes) -> Optional[List[dns.RRHeader]]:
        return self._records.get(name)

    def exists(self, name: bytes) -> bool:
        """
        Whether C{name} has records set, or is above a name that has (an
        empty non-terminal).
        """
        suffix = b"." + name
        return name in self._records or any(n.endswith(suffix) for n in self._records)


class Zones:
    """
    The zones of the C{[dns]} section, found by the longest apex that a
    name is in.
    """

    def __init__(self, zones: Tuple[DNSZone, ...]) -> None:
        self._zones = {z.name.encode("ascii"): Zone(z) for z in zones}

    def find(self, name: bytes) -> Optional[Zone]:
        """
        The zone of C{name} (lower-cased), or C{None}.
        """
        while True:
            zone = self._zones.get(name)
            if zone is not None:
                return zone
            if not name:
                return None
            name = name.partition(b".")[2]
