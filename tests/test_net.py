"""
Tests for L{twistproxy.net}: addresses, networks, prefix tables and
trusted proxies.
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from twistproxy.config import ConfigError
from twistproxy.net import (
    PrefixTable,
    TrustedProxies,
    authority,
    parse_address,
    parse_network,
)


class ParseAddressTests(SynchronousTestCase):
    """
    L{parse_address} turns client addresses into integers.
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 address is its 32-bit integer, not IPv6.
        """
        self.assertEqual(parse_address("10.1.2.3"), (0x0A010203, False))

    def test_ipv6(self) -> None:
        """
        An IPv6 address is its 128-bit integer; a zone suffix is ignored.
        """
        expected = (int(ipaddress.IPv6Address("2001:db8::1")), True)
        self.assertEqual(parse_address("2001:db8::1"), expected)
        self.assertEqual(
            parse_address("fe80::1%eth0"),
            (int(ipaddress.IPv6Address("fe80::1")), True),
        )

    def test_mapped_ipv4(self) -> None:
        """
        An IPv4-mapped IPv6 address, in either notation, is the IPv4 address
        it stands for.
        """
        self.assertEqual(parse_address("::ffff:10.1.2.3"), (0x0A010203, False))
        self.assertEqual(parse_address("::FFFF:a01:203"), (0x0A010203, False))

    def test_not_an_address(self) -> None:
        """
        Anything else is C{None}: a UNIX socket's empty peer, a host name,
        garbage.
        """
        for value in ("", "localhost", "10.1.2", "1.2.3.4.5", "::g", "\x00", "é"):
            self.assertIsNone(parse_address(value), value)


class ParseNetworkTests(SynchronousTestCase):
    """
    L{parse_network} parses networks of configuration files strictly.
    """

    def test_networks(self) -> None:
        """
        IPv4 and IPv6 networks and single addresses are accepted.
        """
        self.assertEqual(
            parse_network("10.1.0.0/16", "p"), ipaddress.ip_network("10.1.0.0/16")
        )
        self.assertEqual(
            parse_network("2001:db8::/32", "p"),
            ipaddress.ip_network("2001:db8::/32"),
        )
        self.assertEqual(
            parse_network("192.0.2.7", "p"), ipaddress.ip_network("192.0.2.7/32")
        )

    def test_mapped_network_is_ipv4(self) -> None:
        """
        A network in IPv4-mapped form is the IPv4 network it stands for.
        """
        self.assertEqual(
            parse_network("::ffff:10.0.0.0/104", "p"),
            ipaddress.ip_network("10.0.0.0/8"),
        )

    def test_host_bits(self) -> None:
        """
        A network with bits set after its prefix is an error that suggests
        the network it would be.
        """
        error = self.assertRaises(
            ConfigError, parse_network, "10.1.2.0/16", "locator.networks.x"
        )
        self.assertEqual(error.path, "locator.networks.x")
        self.assertIn("did you mean '10.1.0.0/16'?", error.problem)

    def test_garbage(self) -> None:
        """
        Something that is not a network, or not a string, is an error.
        """
        for value in ("10.0.0.0/33", "eu-west", "", 10):
            error = self.assertRaises(ConfigError, parse_network, value, "p")
            self.assertEqual(error.path, "p")


class PrefixTableTests(SynchronousTestCase):
    """
    L{PrefixTable} finds the longest network containing an address.
    """

    def setUp(self) -> None:
        self.table = PrefixTable(
            (ipaddress.ip_network(n), v)
            for n, v in [
                ("0.0.0.0/0", "any4"),
                ("10.0.0.0/8", "ten"),
                ("10.1.0.0/16", "ten-one"),
                ("10.1.2.0/24", "ten-one-two"),
                ("10.1.2.3/32", "host"),
                ("2001:db8::/32", "doc"),
                ("2001:db8:1::/48", "doc-one"),
            ]
        )

    def test_longest_prefix_wins(self) -> None:
        """
        Of the networks containing an address, the longest prefix wins,
        whatever order they were given in.
        """
        self.assertEqual(self.table.lookup("10.1.2.3"), "host")
        self.assertEqual(self.table.lookup("10.1.2.4"), "ten-one-two")
        self.assertEqual(self.table.lookup("10.1.3.4"), "ten-one")
        self.assertEqual(self.table.lookup("10.2.3.4"), "ten")
        self.assertEqual(self.table.lookup("192.0.2.1"), "any4")
        self.assertEqual(len(self.table), 7)

    def test_ipv6(self) -> None:
        """
        IPv6 addresses match IPv6 networks only.
        """
        self.assertEqual(self.table.lookup("2001:db8:1::5"), "doc-one")
        self.assertEqual(self.table.lookup("2001:db8:2::5"), "doc")
        self.assertIsNone(self.table.lookup("2001:db9::1"))
        self.assertIsNone(self.table.lookup("::1"))

    def test_mapped_ipv4(self) -> None:
        """
        An IPv4-mapped IPv6 address matches the IPv4 networks.
        """
        self.assertEqual(self.table.lookup("::ffff:10.1.2.3"), "host")
        self.assertIn("::ffff:192.0.2.1", self.table)

    def test_not_an_address(self) -> None:
        """
        What is not an IP address matches nothing, not even C{0.0.0.0/0}.
        """
        self.assertIsNone(self.table.lookup(""))
        self.assertNotIn("unix-socket", self.table)


# --- cidr -------------------------------------------------------------------------------


class TrustedProxiesTests(SynchronousTestCase):
    """
    L{TrustedProxies}.
    """

    def test_ipv4(self):
        """
        IPv4 addresses are matched against IPv4 networks; a bare address is
        a network of one and host bits are ignored.
        """
        trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.7", "198.51.100.77/24"])
        for address in ("10.0.0.1", "10.255.255.255", "192.0.2.7", "198.51.100.1"):
            self.assertIn(address, trusted)
        for address in ("11.0.0.1", "192.0.2.8", "198.51.101.1", "9.255.255.255"):
            self.assertNotIn(address, trusted)

    def test_ipv6(self):
        """
        IPv6 addresses are matched against IPv6 networks, in any spelling.
        """
        trusted = TrustedProxies(["2001:db8::/32", "::1"])
        for address in ("2001:db8::1", "2001:DB8:0:0:0:0:0:2", "::1", "0:0:0:0:0:0:0:1"):
            self.assertIn(address, trusted)
        for address in ("2001:db9::1", "::2", "fe80::1"):
            self.assertNotIn(address, trusted)

    def test_versions_do_not_mix(self):
        """
        An IPv4 address is not in an IPv6 network, nor the reverse.
        """
        self.assertNotIn("10.0.0.1", TrustedProxies(["::/0"]))
        self.assertNotIn("::1", TrustedProxies(["0.0.0.0/0"]))

    def test_ipv4_mapped(self):
        """
        An IPv4 peer of a dual-stack listener, seen as C{::ffff:a.b.c.d},
        is matched against the IPv4 networks.
        """
        trusted = TrustedProxies(["192.0.2.0/24"])
        self.assertIn("::ffff:192.0.2.7", trusted)
        self.assertNotIn("::ffff:198.51.100.7", trusted)

    def test_garbage(self):
        """
        Anything that is not an IP address is not trusted, even with every
        network trusted.
        """
        trusted = TrustedProxies(["0.0.0.0/0", "::/0"])
        for address in ("", "unknown", "localhost", "1.2.3", "1.2.3.4.5", "256.0.0.1",
                        " 10.0.0.1", "10.0.0.1 ", "10.0.0.1/32", "::g", "[::1]", "/run/proxy.sock"):
            with self.subTest(address=address):
                self.assertNotIn(address, trusted)

    def test_empty(self):
        """
        With no networks nothing is trusted.
        """
        self.assertNotIn("127.0.0.1", TrustedProxies([]))
        self.assertNotIn("::1", TrustedProxies(()))


class AuthorityTests(SynchronousTestCase):
    """
    L{authority} writes a host and port as a URL's authority.
    """

    def test_ipv4_and_names(self):
        """
        An IPv4 address or a name is written as it is, then the port.
        """
        self.assertEqual(authority("192.0.2.7", 8080), "192.0.2.7:8080")
        self.assertEqual(authority("app.internal", 80), "app.internal:80")

    def test_ipv6_bracketed(self):
        """
        An IPv6 address is bracketed, so that its colons are not read as
        the port's.
        """
        self.assertEqual(authority("2001:db8::1", 443), "[2001:db8::1]:443")

    def test_default_port_left_out(self):
        """
        With a scheme, the port is left out when it is the scheme's
        default, and kept otherwise.
        """
        self.assertEqual(authority("2001:db8::1", 80, "http"), "[2001:db8::1]")
        self.assertEqual(authority("example.com", 443, "https"), "example.com")
        self.assertEqual(authority("example.com", 443, "http"), "example.com:443")
        self.assertEqual(authority("example.com", 8443, "https"), "example.com:8443")
