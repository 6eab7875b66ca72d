"""
Tests for L{twistproxy.upstream.locators}: the C{cidr}, C{header} and
C{maxmind} locators, their dropin, and finding locator factories by name.

The C{maxmind} tests read a small MaxMind DB file that L{write_mmdb} writes
here, following the public MaxMind DB format specification (version 2.0),
so that no database has to be downloaded or shipped.  They need the
C{maxminddb} package and are skipped without it; the mapping from records to
regions is also tested with a fake reader, which needs nothing.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted.plugin import IPlugin, getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import twistproxy.plugins
from twistproxy import components
from twistproxy.config import ConfigError
from twistproxy.interfaces import ILocator, ILocatorFactory
from twistproxy.plugins import twistproxy_locators
from twistproxy.testing import FakeRequestInfo
from twistproxy.upstream.locators import (
    CIDRLocator,
    CIDRLocatorFactory,
    HeaderLocator,
    HeaderLocatorFactory,
    MaxMindLocator,
    MaxMindLocatorFactory,
    build_locator,
    find_locator_factory,
    parse_locality,
)

try:
    import maxminddb
except ImportError:
    maxminddb = None

_NEEDS_MAXMINDDB = "the maxminddb package is not installed (pip install maxminddb)"


# --- A minimal MaxMind DB writer ----------------------------------------------------


class _Uint:
    """
    An unsigned integer of a given MaxMind DB type, for metadata fields
    whose type the C reader checks exactly.
    """

    def __init__(self, type_code: int, value: int) -> None:
        self.type_code = type_code
        self.value = value


def _control(type_code: int, size: int) -> bytes:
    """
    The control byte(s) of a data field: type in the top 3 bits (0 and an
    extra byte for the extended types above 7), size below.
    """
    if type_code <= 7:
        first, extended = type_code << 5, b""
    else:
        first, extended = 0, bytes([type_code - 7])
    if size < 29:
        return bytes([first | size]) + extended
    if size < 29 + 256:
        return bytes([first | 29]) + extended + bytes([size - 29])
    if size < 285 + 65536:
        return bytes([first | 30]) + extended + (size - 285).to_bytes(2, "big")
    return bytes([first | 31]) + extended + (size - 65821).to_bytes(3, "big")


def _encode(value: Any) -> bytes:
    """
    Encode a value in the MaxMind DB data format.
    """
    if isinstance(value, _Uint):
        size = (value.value.bit_length() + 7) // 8
        return _control(value.type_code, size) + value.value.to_bytes(size, "big")
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, int):
        for type_code, bits in ((5, 16), (6, 32), (9, 64), (10, 128)):
            if 0 <= value < 1 << bits:
                return _encode(_Uint(type_code, value))
        raise ValueError(value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _control(2, len(data)) + data
    if isinstance(value, Mapping):
        return _control(7, len(value)) + b"".join(
            _encode(k) + _encode(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(_encode(v) for v in value)
    raise TypeError(value)


def write_mmdb(path: str, networks: Mapping[str, Mapping[str, Any]]) -> None:
    """
    Write an IPv6 MaxMind DB file (24-bit records) mapping networks to
    records.  IPv4 networks are stored in C{::/96}, where readers look IPv4
    addresses up; longer prefixes win over shorter ones.

    @param networks: C{{"10.0.0.0/8": {"country": {...}}, ...}}.
    """
    data = b""
    offsets: Dict[bytes, int] = {}
    entries: List[Tuple[int, int, int]] = []
    for text, record in networks.items():
        network = ipaddress.ip_network(text)
        encoded = _encode(record)
        if encoded not in offsets:
            offsets[encoded] = len(data)
            data += encoded
        prefix = network.prefixlen + (96 if network.version == 4 else 0)
        entries.append((prefix, int(network.network_address), offsets[encoded]))

    # The tree: a node is a two-item list; a child is a node, None (no
    # data) or ("data", offset).  Shorter prefixes go in first, and a
    # longer one pushes the shorter one's data down into both halves.
    root: List[Any] = [None, None]
    for prefix, number, offset in sorted(entries):
        node = root
        for depth in range(prefix):
            bit = (number >> (127 - depth)) & 1
            if depth == prefix - 1:
                node[bit] = ("data", offset)
            else:
                child = node[bit]
                if not isinstance(child, list):
                    child = node[bit] = [child, child]
                node = child

    nodes: List[List[Any]] = []
    numbers: Dict[int, int] = {}
    queue = [root]
    while queue:
        node = queue.pop(0)
        numbers[id(node)] = len(nodes)
        nodes.append(node)
        queue.extend(child for child in node if isinstance(child, list))
    count = len(nodes)

    def record(child: Any) -> bytes:
        if child is None:
            value = count
        elif isinstance(child, list):
            value = numbers[id(child)]
        else:
            value = count + 16 + child[1]
        return value.to_bytes(3, "big")

    tree = b"".join(record(left) + record(right) for left, right in nodes)
    metadata = {
        "node_count": _Uint(6, count),
        "record_size": _Uint(5, 24),
        "ip_version": _Uint(5, 6),
        "database_type": "twistproxy-Test-Country",
        "languages": ["en"],
        "binary_format_major_version": _Uint(5, 2),
        "binary_format_minor_version": _Uint(5, 0),
        "build_epoch": _Uint(9, 1700000000),
        "description": {"en": "twistproxy test database"},
    }
    with open(path, "wb") as f:
        f.write(
            tree
            + b"\x00" * 16
            + data
            + b"\xab\xcd\xefMaxMind.com"
            + _encode(metadata)
        )


def _country(iso: str, continent: str) -> Dict[str, Any]:
    return {
        "continent": {"code": continent, "names": {"en": continent}},
        "country": {"iso_code": iso, "names": {"en": iso}},
    }


_GEO = {
    "10.0.0.0/8": _country("DE", "EU"),
    "10.2.0.0/16": _country("US", "NA"),
    "10.2.3.0/24": _country("CA", "NA"),
    "192.0.2.0/24": {"registered_country": {"iso_code": "JP"},
                     "continent": {"code": "AS"}},
    "2001:db8::/32": _country("FR", "EU"),
    "2001:db8:1::/48": _country("BR", "SA"),
}


def _at(address: str, **headers: str) -> FakeRequestInfo:
    return FakeRequestInfo(client_address=address, headers=headers)


# --- Addresses and networks -----------------------------------------------------------


class ParseLocalityTests(SynchronousTestCase):
    """
    L{parse_locality} parses C{'region'} and C{'region/zone'}.
    """

    def test_forms(self) -> None:
        """
        A region alone has no zone; C{region/zone} gives both.
        """
        self.assertEqual(parse_locality("us-east", "p"), ("us-east", ""))
        self.assertEqual(
            parse_locality("eu-west/eu-west-1a", "p"), ("eu-west", "eu-west-1a")
        )

    def test_errors(self) -> None:
        """
        Empty names, extra slashes, white space, other punctuation and
        non-strings are errors at the given path.
        """
        for value in (
            "", "/", "eu/", "/z", "a/b/c", " eu", "eu west", "eu,us", "eu\n",
            "é", 3, None,
        ):
            error = self.assertRaises(ConfigError, parse_locality, value, "p.q")
            self.assertEqual(error.path, "p.q")
            self.assertIn("'region/zone'", error.problem)


class CIDRLocatorTests(SynchronousTestCase):
    """
    The C{cidr} locator places clients by the longest matching network.
    """

    def setUp(self) -> None:
        self.locator = CIDRLocatorFactory().fromConfig(
            {
                "networks": {
                    "10.0.0.0/8": "eu-west",
                    "10.1.0.0/16": "eu-west/eu-west-1a",
                    "10.1.128.0/17": "eu-west/eu-west-1b",
                    "10.2.0.0/16": "us-east",
                    "2001:db8::/32": "us-east/us-east-1a",
                    "::ffff:192.168.0.0/112": "lab",
                }
            },
            "locator",
        )

    def test_interface(self) -> None:
        """
        The locator provides L{ILocator}.
        """
        self.assertIsInstance(self.locator, CIDRLocator)
        self.assertTrue(verifyObject(ILocator, self.locator))

    def test_longest_prefix(self) -> None:
        """
        The longest network containing the client's address gives the
        region and zone.
        """
        self.assertEqual(
            self.locator.locate(_at("10.1.0.9")), ("eu-west", "eu-west-1a")
        )
        self.assertEqual(
            self.locator.locate(_at("10.1.200.9")), ("eu-west", "eu-west-1b")
        )
        self.assertEqual(self.locator.locate(_at("10.9.0.1")), ("eu-west", ""))
        self.assertEqual(self.locator.locate(_at("10.2.0.1")), ("us-east", ""))

    def test_ipv6(self) -> None:
        """
        IPv6 clients are placed by the IPv6 networks.
        """
        self.assertEqual(
            self.locator.locate(_at("2001:db8:5::1")), ("us-east", "us-east-1a")
        )

    def test_mapped_ipv4(self) -> None:
        """
        A client on a dual-stack listener, whose address is IPv4-mapped, is
        placed by the IPv4 networks; a network written in mapped form is an
        IPv4 network.
        """
        self.assertEqual(
            self.locator.locate(_at("::ffff:10.1.0.9")), ("eu-west", "eu-west-1a")
        )
        self.assertEqual(self.locator.locate(_at("192.168.4.4")), ("lab", ""))
        self.assertEqual(self.locator.locate(_at("::ffff:192.168.4.4")), ("lab", ""))

    def test_unknown(self) -> None:
        """
        A client in no network, or without an IP address, is unknown.
        """
        for address in ("172.16.0.1", "2001:db9::1", "", "nonsense"):
            self.assertEqual(self.locator.locate(_at(address)), ("", ""))


class CIDRLocatorFactoryTests(SynchronousTestCase):
    """
    L{CIDRLocatorFactory} validates the C{cidr} options with their paths.
    """

    def _error(self, options: Mapping[str, Any]) -> ConfigError:
        return self.assertRaises(
            ConfigError, CIDRLocatorFactory().fromConfig, options, "locator"
        )

    def test_interfaces(self) -> None:
        """
        The factory provides L{ILocatorFactory} and L{IPlugin}, is named
        C{cidr} and has a one-line help.
        """
        factory = CIDRLocatorFactory()
        self.assertTrue(verifyObject(ILocatorFactory, factory))
        self.assertTrue(verifyObject(IPlugin, factory))
        self.assertEqual(factory.name, "cidr")
        self.assertNotIn("\n", factory.help)

    def test_networks_required(self) -> None:
        """
        Without C{networks} the error is at C{locator.networks}.
        """
        error = self._error({})
        self.assertEqual(error.path, "locator.networks")

    def test_networks_must_be_a_nonempty_table(self) -> None:
        """
        C{networks} must be a table with at least one network.
        """
        for value in (["10.0.0.0/8"], "10.0.0.0/8", {}):
            self.assertEqual(self._error({"networks": value}).path, "locator.networks")

    def test_bad_network(self) -> None:
        """
        A key that is not a network is an error at its quoted key.
        """
        error = self._error({"networks": {"10.0.0.0/8": "a", "10.0.0/8": "b"}})
        self.assertEqual(error.path, 'locator.networks."10.0.0/8"')
        error = self._error({"networks": {"10.1.2.0/16": "a"}})
        self.assertIn("did you mean '10.1.0.0/16'", error.problem)

    def test_bad_locality(self) -> None:
        """
        A value that is not C{region} or C{region/zone} is an error at its
        key.
        """
        error = self._error({"networks": {"10.0.0.0/8": "a/b/c"}})
        self.assertEqual(error.path, 'locator.networks."10.0.0.0/8"')

    def test_duplicate_network(self) -> None:
        """
        The same network written twice (here once in mapped form) is an
        error, since one of the two would be ignored.
        """
        error = self._error(
            {"networks": {"10.0.0.0/8": "a", "::ffff:10.0.0.0/104": "b"}}
        )
        self.assertEqual(error.path, 'locator.networks."::ffff:10.0.0.0/104"')
        self.assertIn("same network as '10.0.0.0/8'", error.problem)

    def test_unknown_option(self) -> None:
        """
        An unknown option is an error at its path, with the options the
        locator takes and the closest one to a misspelt name.
        """
        error = self._error({"networks": {"10.0.0.0/8": "a"}, "default": "x"})
        self.assertEqual(error.path, "locator.default")
        self.assertIn("unknown option 'default'", error.problem)
        self.assertIn("the cidr locator takes networks", error.problem)
        error = self._error({"network": {"10.0.0.0/8": "a"}})
        self.assertEqual(error.path, "locator.network")
        self.assertIn("(did you mean 'networks'?)", error.problem)


# --- header -------------------------------------------------------------------------


class HeaderLocatorTests(SynchronousTestCase):
    """
    The C{header} locator believes a header from trusted peers only.
    """

    def setUp(self) -> None:
        self.locator = HeaderLocatorFactory().fromConfig(
            {"name": "X-Client-Region", "trusted": ["10.0.0.0/8", "fd00::/8"]},
            "locator",
        )

    def test_interface(self) -> None:
        """
        The locator provides L{ILocator}.
        """
        self.assertIsInstance(self.locator, HeaderLocator)
        self.assertTrue(verifyObject(ILocator, self.locator))

    def test_trusted_peer(self) -> None:
        """
        From a trusted peer the header gives the region, and the zone when
        it has one; the header's name is matched in any case.
        """
        self.assertEqual(
            self.locator.locate(_at("10.0.0.5", **{"x-client-region": "eu-west"})),
            ("eu-west", ""),
        )
        self.assertEqual(
            self.locator.locate(
                _at("fd00::5", **{"X-Client-Region": " us-east/us-east-1b "})
            ),
            ("us-east", "us-east-1b"),
        )

    def test_mapped_trusted_peer(self) -> None:
        """
        A trusted IPv4 peer on a dual-stack listener is still trusted.
        """
        self.assertEqual(
            self.locator.locate(
                _at("::ffff:10.0.0.5", **{"X-Client-Region": "eu-west"})
            ),
            ("eu-west", ""),
        )

    def test_untrusted_peer(self) -> None:
        """
        From any other peer the header is ignored: a client cannot choose
        its own region.
        """
        for address in ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", ""):
            self.assertEqual(
                self.locator.locate(_at(address, **{"X-Client-Region": "eu-west"})),
                ("", ""),
            )

    def test_missing_or_malformed(self) -> None:
        """
        Without the header, or with a value that is not C{region} or
        C{region/zone}, the client is unknown.
        """
        self.assertEqual(self.locator.locate(_at("10.0.0.5")), ("", ""))
        for value in ("", "a/b/c", "eu west", "/x", "eu;drop"):
            self.assertEqual(
                self.locator.locate(_at("10.0.0.5", **{"X-Client-Region": value})),
                ("", ""),
                value,
            )


class HeaderLocatorFactoryTests(SynchronousTestCase):
    """
    L{HeaderLocatorFactory} requires both C{name} and C{trusted}.
    """

    def _error(self, options: Mapping[str, Any]) -> ConfigError:
        return self.assertRaises(
            ConfigError, HeaderLocatorFactory().fromConfig, options, "locator"
        )

    def test_interfaces(self) -> None:
        """
        The factory provides L{ILocatorFactory} and L{IPlugin} and is named
        C{header}.
        """
        factory = HeaderLocatorFactory()
        self.assertTrue(verifyObject(ILocatorFactory, factory))
        self.assertTrue(verifyObject(IPlugin, factory))
        self.assertEqual(factory.name, "header")

    def test_trusted_required(self) -> None:
        """
        Without C{trusted}, or with an empty list, the error is at
        C{locator.trusted}: nobody would be believed.
        """
        self.assertEqual(self._error({"name": "X-R"}).path, "locator.trusted")
        error = self._error({"name": "X-R", "trusted": []})
        self.assertEqual(error.path, "locator.trusted")
        self.assertIn("at least one network", error.problem)

    def test_bad_trusted(self) -> None:
        """
        C{trusted} must be a list of networks; a bad item is reported by
        its index.
        """
        self.assertEqual(
            self._error({"name": "X-R", "trusted": "10.0.0.0/8"}).path,
            "locator.trusted",
        )
        self.assertEqual(
            self._error({"name": "X-R", "trusted": ["10.0.0.0/8", "x"]}).path,
            "locator.trusted[1]",
        )

    def test_bad_name(self) -> None:
        """
        C{name} is required and must be a header field name.
        """
        self.assertEqual(
            self._error({"trusted": ["10.0.0.0/8"]}).path, "locator.name"
        )
        for name in ("", "X Region", "X-Region:", 5):
            error = self._error({"name": name, "trusted": ["10.0.0.0/8"]})
            self.assertEqual(error.path, "locator.name")


# --- maxmind --------------------------------------------------------------------------


class _FakeReader:
    """
    Stands in for a C{maxminddb.Reader}: records by exact address.
    """

    def __init__(self, records: Mapping[str, Any]) -> None:
        self.records = dict(records)
        self.lookups: List[str] = []
        self.closed = False

    def get(self, address: Any) -> Optional[Any]:
        text = str(address)
        self.lookups.append(text)
        if text == "203.0.113.66":
            raise RuntimeError("corrupt search tree")
        return self.records.get(text)

    def close(self) -> None:
        self.closed = True


class MaxMindLocatorMappingTests(SynchronousTestCase):
    """
    L{MaxMindLocator} turns records into regions; tested with a fake
    reader, so these run without C{maxminddb}.
    """

    def setUp(self) -> None:
        self.reader = _FakeReader(
            {
                "192.0.2.1": _country("DE", "EU"),
                "192.0.2.2": {"registered_country": {"iso_code": "JP"}},
                "192.0.2.3": {"city": {"names": {"en": "Nowhere"}}},
                "2001:db8::1": _country("US", "NA"),
            }
        )

    def test_interface(self) -> None:
        """
        The locator provides L{ILocator}.
        """
        self.assertTrue(verifyObject(ILocator, MaxMindLocator(self.reader)))

    def test_by_country(self) -> None:
        """
        By default the region is the country code, falling back to the
        registered country; the zone is empty.
        """
        locator = MaxMindLocator(self.reader)
        self.assertEqual(locator.locate(_at("192.0.2.1")), ("DE", ""))
        self.assertEqual(locator.locate(_at("192.0.2.2")), ("JP", ""))
        self.assertEqual(locator.locate(_at("2001:db8::1")), ("US", ""))

    def test_by_continent(self) -> None:
        """
        With C{by="continent"} the region is the continent code.
        """
        locator = MaxMindLocator(self.reader, by="continent")
        self.assertEqual(locator.locate(_at("192.0.2.1")), ("EU", ""))
        self.assertEqual(locator.locate(_at("2001:db8::1")), ("NA", ""))
        self.assertEqual(locator.locate(_at("192.0.2.2")), ("", ""))

    def test_regions_mapping(self) -> None:
        """
        C{regions} maps codes to regions and zones; unmapped codes are the
        region themselves.
        """
        locator = MaxMindLocator(
            self.reader, regions={"DE": ("eu-central", "eu-central-1a")}
        )
        self.assertEqual(
            locator.locate(_at("192.0.2.1")), ("eu-central", "eu-central-1a")
        )
        self.assertEqual(locator.locate(_at("2001:db8::1")), ("US", ""))

    def test_unknown(self) -> None:
        """
        No record, a record without the code, and a client without an IP
        address are unknown; the last is not even looked up.
        """
        locator = MaxMindLocator(self.reader)
        self.assertEqual(locator.locate(_at("198.51.100.1")), ("", ""))
        self.assertEqual(locator.locate(_at("192.0.2.3")), ("", ""))
        self.assertEqual(locator.locate(_at("")), ("", ""))
        self.assertNotIn("", self.reader.lookups)

    def test_mapped_ipv4_looked_up_as_ipv4(self) -> None:
        """
        An IPv4-mapped client address is looked up as its IPv4 address.
        """
        locator = MaxMindLocator(self.reader)
        self.assertEqual(locator.locate(_at("::ffff:192.0.2.1")), ("DE", ""))
        self.assertEqual(self.reader.lookups, ["192.0.2.1"])

    def test_cached(self) -> None:
        """
        Repeated requests from one address are looked up once.
        """
        locator = MaxMindLocator(self.reader)
        for _ in range(3):
            self.assertEqual(locator.locate(_at("192.0.2.1")), ("DE", ""))
        self.assertEqual(self.reader.lookups, ["192.0.2.1"])

    def test_reader_failure(self) -> None:
        """
        A failing lookup is logged and the client is unknown; the request
        is still served.
        """
        locator = MaxMindLocator(self.reader)
        self.assertEqual(locator.locate(_at("203.0.113.66")), ("", ""))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_close(self) -> None:
        """
        C{close} closes the reader.
        """
        MaxMindLocator(self.reader).close()
        self.assertTrue(self.reader.closed)

    def test_bad_by(self) -> None:
        """
        C{by} other than C{country} or C{continent} is a L{ValueError}.
        """
        self.assertRaises(ValueError, MaxMindLocator, self.reader, by="city")


class MaxMindDatabaseTests(SynchronousTestCase):
    """
    The C{maxmind} locator reads a real MaxMind DB file, written by
    L{write_mmdb}.
    """

    if maxminddb is None:
        skip = _NEEDS_MAXMINDDB

    def setUp(self) -> None:
        self.database = self.mktemp()
        write_mmdb(self.database, _GEO)

    def _locator(self, **options: Any) -> ILocator:
        locator = MaxMindLocatorFactory().fromConfig(
            dict(database=self.database, **options), "locator"
        )
        self.addCleanup(locator.close)
        return locator

    def test_writer_against_readers(self) -> None:
        """
        The test database reads back with both the pure-Python reader and
        the default (C extension, when there is one) reader, longest prefix
        first.
        """
        for mode in (maxminddb.MODE_FILE, maxminddb.MODE_AUTO):
            with maxminddb.open_database(self.database, mode) as reader:
                self.assertEqual(reader.get("10.2.3.4")["country"]["iso_code"], "CA")
                self.assertEqual(reader.get("10.2.9.9")["country"]["iso_code"], "US")
                self.assertEqual(reader.get("10.9.9.9")["country"]["iso_code"], "DE")
                self.assertIsNone(reader.get("11.0.0.1"))
                self.assertEqual(
                    reader.get("2001:db8:1::1")["country"]["iso_code"], "BR"
                )
                self.assertEqual(reader.metadata().node_count > 0, True)

    def test_country(self) -> None:
        """
        By default the region is the client's country code, longest prefix
        first, over IPv4, IPv6 and mapped IPv4.
        """
        locator = self._locator()
        self.assertTrue(verifyObject(ILocator, locator))
        cases = {
            "10.1.1.1": ("DE", ""),
            "10.2.0.1": ("US", ""),
            "10.2.3.200": ("CA", ""),
            "::ffff:10.2.3.200": ("CA", ""),
            "192.0.2.9": ("JP", ""),
            "2001:db8:2::1": ("FR", ""),
            "2001:db8:1::1": ("BR", ""),
            "11.0.0.1": ("", ""),
            "2001:db9::1": ("", ""),
            "": ("", ""),
        }
        for address, expected in cases.items():
            self.assertEqual(locator.locate(_at(address)), expected, address)

    def test_continent_and_regions(self) -> None:
        """
        C{by = "continent"} gives continent codes, which C{regions} maps to
        regions and zones.
        """
        locator = self._locator(
            by="continent",
            regions={"EU": "eu-west/eu-west-1a", "NA": "us-east"},
        )
        self.assertEqual(locator.locate(_at("10.1.1.1")), ("eu-west", "eu-west-1a"))
        self.assertEqual(locator.locate(_at("10.2.3.4")), ("us-east", ""))
        self.assertEqual(locator.locate(_at("2001:db8:1::1")), ("SA", ""))
        self.assertEqual(locator.locate(_at("192.0.2.1")), ("AS", ""))

    def test_build_by_name(self) -> None:
        """
        L{build_locator} builds the C{maxmind} locator by name.
        """
        locator = build_locator(
            "maxmind", {"database": self.database}, "locator"
        )
        self.addCleanup(locator.close)
        self.assertIsInstance(locator, MaxMindLocator)
        self.assertEqual(locator.locate(_at("10.1.1.1")), ("DE", ""))


class MaxMindLocatorFactoryTests(SynchronousTestCase):
    """
    L{MaxMindLocatorFactory} validates its options and the database when
    the proxy starts.
    """

    def _error(self, options: Mapping[str, Any]) -> ConfigError:
        return self.assertRaises(
            ConfigError, MaxMindLocatorFactory().fromConfig, options, "locator"
        )

    def test_interfaces(self) -> None:
        """
        The factory provides L{ILocatorFactory} and L{IPlugin} and is named
        C{maxmind}.
        """
        factory = MaxMindLocatorFactory()
        self.assertTrue(verifyObject(ILocatorFactory, factory))
        self.assertTrue(verifyObject(IPlugin, factory))
        self.assertEqual(factory.name, "maxmind")

    def test_package_missing(self) -> None:
        """
        Without the C{maxminddb} package the error is at C{locator.type}
        and says how to install it.
        """
        # The import system reads the interpreter's own sys.modules
        # dictionary, so change it in place: None makes the import fail.
        saved = sys.modules.get("maxminddb")
        sys.modules["maxminddb"] = None  # type: ignore[assignment]
        self.addCleanup(
            lambda: sys.modules.__setitem__("maxminddb", saved)
            if saved is not None
            else sys.modules.pop("maxminddb", None)
        )
        error = self._error({"database": "/nonexistent.mmdb"})
        self.assertEqual(error.path, "locator.type")
        self.assertEqual(
            error.problem,
            "the maxmind locator needs the maxminddb package: "
            "pip install 'twistproxy[geo]'",
        )

    def test_options(self) -> None:
        """
        C{database} is required; C{by}, C{regions} and unknown options are
        checked, each at its own path.
        """
        if maxminddb is None:
            raise self.skipTest(_NEEDS_MAXMINDDB)
        self.assertEqual(self._error({}).path, "locator.database")
        self.assertEqual(self._error({"database": 7}).path, "locator.database")
        self.assertEqual(
            self._error({"database": "x", "by": "city"}).path, "locator.by"
        )
        self.assertEqual(
            self._error({"database": "x", "regions": ["EU"]}).path,
            "locator.regions",
        )
        self.assertEqual(
            self._error({"database": "x", "regions": {"EU": "a/b/c"}}).path,
            "locator.regions.EU",
        )
        self.assertEqual(
            self._error({"database": "x", "field": "y"}).path, "locator.field"
        )

    def test_database_missing(self) -> None:
        """
        A database file that cannot be opened is an error at
        C{locator.database}.
        """
        if maxminddb is None:
            raise self.skipTest(_NEEDS_MAXMINDDB)
        error = self._error({"database": self.mktemp()})
        self.assertEqual(error.path, "locator.database")
        self.assertIn("cannot open", error.problem)

    def test_database_invalid(self) -> None:
        """
        A file that is not a MaxMind DB is an error at C{locator.database}.
        """
        if maxminddb is None:
            raise self.skipTest(_NEEDS_MAXMINDDB)
        path = FilePath(self.mktemp())
        path.setContent(b"not a database\n" * 10)
        error = self._error({"database": path.path})
        self.assertEqual(error.path, "locator.database")
        self.assertIn("not a valid MaxMind DB file", error.problem)


# --- Finding factories ---------------------------------------------------------------


@implementer(ILocatorFactory)
class _EverywhereFactory:
    """
    A third-party factory that is not a dropin, found by its dotted path.
    """

    name = "everywhere"
    help = "Every client is in region 'x'."

    def fromConfig(self, options, path):
        return CIDRLocator([(ipaddress.ip_network("0.0.0.0/0"), ("x", ""))])


everywhere = _EverywhereFactory()
notAFactory = object()


class DropinTests(SynchronousTestCase):
    """
    The built-in locators are dropins of L{twistproxy.plugins}.
    """

    def test_exported(self) -> None:
        """
        The dropin exports one factory instance per built-in locator, and
        L{getPlugins} finds each of them once.
        """
        self.assertIsInstance(twistproxy_locators.cidr, CIDRLocatorFactory)
        self.assertIsInstance(twistproxy_locators.header, HeaderLocatorFactory)
        self.assertIsInstance(twistproxy_locators.maxmind, MaxMindLocatorFactory)
        names = [
            f.name for f in getPlugins(ILocatorFactory, twistproxy.plugins)
        ]
        for name in ("cidr", "header", "maxmind"):
            self.assertEqual(names.count(name), 1, names)


class FindLocatorFactoryTests(SynchronousTestCase):
    """
    L{find_locator_factory} finds factories by name or dotted path, and
    L{build_locator} builds locators with them.
    """

    def test_by_name(self) -> None:
        """
        Each built-in factory is found by its name.
        """
        self.assertIsInstance(
            find_locator_factory("cidr", "locator.type"), CIDRLocatorFactory
        )
        self.assertIsInstance(
            find_locator_factory("header", "locator.type"), HeaderLocatorFactory
        )
        self.assertIsInstance(
            find_locator_factory("maxmind", "locator.type"), MaxMindLocatorFactory
        )

    def test_unknown_name(self) -> None:
        """
        An unknown name is an error at the given path listing the known
        names.
        """
        error = self.assertRaises(
            ConfigError, find_locator_factory, "geoip", "locator.type"
        )
        self.assertEqual(error.path, "locator.type")
        self.assertTrue(error.problem.startswith("unknown locator 'geoip'; known: "))
        self.assertIn("cidr, header, maxmind", error.problem)

    def test_not_a_string(self) -> None:
        """
        A type that is not a non-empty string is an error.
        """
        for name in ("", 3):
            error = self.assertRaises(ConfigError, find_locator_factory, name, "p")
            self.assertEqual(error.path, "p")

    def test_ambiguous(self) -> None:
        """
        When several plugins claim a name, the lookup fails instead of
        choosing one by chance.
        """
        self.patch(
            components,
            "getPlugins",
            lambda interface, package: [CIDRLocatorFactory(), CIDRLocatorFactory()],
        )
        error = self.assertRaises(ConfigError, find_locator_factory, "cidr", "p")
        self.assertIn("ambiguous", error.problem)

    def test_dotted_path(self) -> None:
        """
        A name with a dot is the dotted path of a factory object.
        """
        self.assertIs(
            find_locator_factory("tests.test_locators.everywhere", "p"), everywhere
        )
        self.assertIs(
            find_locator_factory("twistproxy.plugins.twistproxy_locators.cidr", "p"),
            twistproxy_locators.cidr,
        )

    def test_dotted_path_errors(self) -> None:
        """
        A missing object, an object that is not a factory, and a factory
        class are each an error at the given path.
        """
        for name, words in [
            ("tests.test_locators.nothing", "cannot find locator"),
            ("no_such_module_q.factory", "cannot find locator"),
            ("tests.test_locators.notAFactory", "is not a locator factory"),
            ("twistproxy.upstream.locators.CIDRLocatorFactory", "name an instance"),
        ]:
            error = self.assertRaises(ConfigError, find_locator_factory, name, "p")
            self.assertEqual(error.path, "p")
            self.assertIn(words, error.problem)

    def test_build_locator(self) -> None:
        """
        L{build_locator} reports a bad type at C{locator.type} and a bad
        option at C{locator.<key>}, and builds the locator otherwise.
        """
        error = self.assertRaises(ConfigError, build_locator, "nope", {}, "locator")
        self.assertEqual(error.path, "locator.type")
        error = self.assertRaises(
            ConfigError, build_locator, "cidr", {"networks": []}, "locator"
        )
        self.assertEqual(error.path, "locator.networks")
        locator = build_locator(
            "cidr", {"networks": {"10.0.0.0/8": "eu-west"}}, "locator"
        )
        self.assertEqual(locator.locate(_at("10.0.0.1")), ("eu-west", ""))
        locator = build_locator("tests.test_locators.everywhere", {}, "locator")
        self.assertEqual(locator.locate(_at("1.2.3.4")), ("x", ""))
