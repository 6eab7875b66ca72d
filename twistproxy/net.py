# -*- test-case-name: tests.test_net -*-
"""
Addresses and networks: what the proxy knows of IP beyond the sockets.

Clients are placed, trusted, allowed or refused by their address, looked up
in a L{PrefixTable} (longest-prefix match, one dictionary probe per prefix
length): the C{access} filter's networks, the locators' tables, the
trusted proxies (L{TrustedProxies}) whose forwarding fields and PROXY
headers are believed.  An IPv4 client of a dual-stack listener shows up as
C{::ffff:a.b.c.d} and is looked up as the IPv4 address it stands for, so
that one IPv4 network covers it however it arrives.

An IPv6 host written beside a port takes brackets (L{authority}), in a
C{Host} field, a URL or a log line.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Dict, Generic, Iterable, Optional, Tuple, TypeVar, Union

from twisted.internet.address import IPv4Address, IPv6Address

from twistproxy.config import ConfigError

_V = TypeVar("_V")
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_from_bytes = int.from_bytes


def parse_address(address: str) -> Optional[Tuple[int, bool]]:
    """
    Parse a client address into an integer, treating IPv4-mapped IPv6
    addresses (C{::ffff:192.0.2.7}) as the IPv4 address they stand for.

    This is on the hot path: C{socket.inet_pton} does the parsing in C.

    @param address: An IPv4 or IPv6 address literal, for example
        C{'192.0.2.7'} or C{'2001:db8::1'}; an IPv6 zone suffix
        (C{'fe80::1%eth0'}) is ignored.
    @return: C{(integer, is_ipv6)}, or C{None} when C{address} is not an IP
        address (for example a UNIX socket peer's C{''}).
    """
    try:
        return _from_bytes(_inet_pton(_AF_INET, address), "big"), False
    except (OSError, ValueError):
        pass
    if "%" in address:
        address = address.partition("%")[0]
    try:
        packed = _inet_pton(_AF_INET6, address)
    except (OSError, ValueError):
        return None
    if packed[:12] == _MAPPED_PREFIX:
        return _from_bytes(packed[12:], "big"), False
    return _from_bytes(packed, "big"), True


def parse_network(value: object, path: str) -> Network:
    """
    Parse a network of a configuration file.

    A network written in IPv4-mapped IPv6 form (C{'::ffff:10.0.0.0/104'})
    becomes the IPv4 network it stands for, since mapped client addresses
    are looked up as IPv4 (L{parse_address}).

    @param value: C{'10.1.0.0/16'}, C{'2001:db8::/32'}, or a single address
        (C{'192.0.2.7'}, a C{/32} or C{/128}).
    @param path: Where C{value} came from, for errors.
    @raises ConfigError: when C{value} is not a network, or has bits set
        after its prefix (C{'10.1.2.0/16'}), which is almost always a typo
        for a different network than the one the operator meant.
    """
    if not isinstance(value, str):
        raise ConfigError(
            path, f"must be a network such as '10.0.0.0/8', not {value!r}"
        )
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                path,
                f"{value!r} is not an IP network (such as '10.0.0.0/8' or "
                f"'2001:db8::/32'): {e}",
            ) from None
        raise ConfigError(
            path,
            f"{value!r} has host bits set after its prefix; did you mean "
            f"'{loose}'?",
        ) from None
    return _unmapped(network)


def _unmapped(network: Network) -> Network:
    """
    The IPv4 network that an IPv4-mapped IPv6 network stands for; any
    other network as it is.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class PrefixTable(Generic[_V]):
    """
    Longest-prefix match of IPv4 and IPv6 addresses against a fixed set of
    networks, each with a value.

    Per address family there is one dictionary per prefix length present,
    keyed by the network's leading bits as an integer.  A lookup shifts the
    address right by the number of host bits of each length in turn, from
    the longest prefix, and stops at the first hit: at most 33 (IPv4) or
    129 (IPv6) probes, in practice as many as there are distinct lengths.
    """

    __slots__ = ("_v4", "_v6", "_size")

    def __init__(self, entries: Iterable[Tuple[Network, _V]]) -> None:
        """
        @param entries: C{(network, value)} pairs.  A network given twice
            keeps its last value.
        """
        tables: Dict[Tuple[int, int], Dict[int, _V]] = {}
        for network, value in entries:
            bits = network.max_prefixlen
            shift = bits - network.prefixlen
            key = int(network.network_address) >> shift
            tables.setdefault((bits, shift), {})[key] = value
        # Smallest shift (longest prefix) first.
        self._v4 = tuple(
            (shift, table)
            for (bits, shift), table in sorted(tables.items())
            if bits == 32
        )
        self._v6 = tuple(
            (shift, table)
            for (bits, shift), table in sorted(tables.items())
            if bits == 128
        )
        self._size = sum(len(t) for t in tables.values())

    def lookup(self, address: str) -> Optional[_V]:
        """
        The value of the longest network that contains C{address}.

        @param address: An IP address literal, see L{parse_address}.
        @return: The value, or C{None} when no network contains the address
            or it is not an IP address.
        """
        parsed = parse_address(address)
        if parsed is None:
            return None
        number, is_ipv6 = parsed
        for shift, table in self._v6 if is_ipv6 else self._v4:
            value = table.get(number >> shift)
            if value is not None:
                return value
        return None

    def __contains__(self, address: str) -> bool:
        return self.lookup(address) is not None

    def __len__(self) -> int:
        return self._size


class NetworkSet(PrefixTable[bool]):
    """
    A set of networks: C{address in networks}, an IPv4-mapped address
    (a dual-stack listener's IPv4 peer) matching the IPv4 network it
    stands for.
    """

    __slots__ = ()

    def __init__(self, cidrs: Iterable[str]):
        """
        @param cidrs: Networks or single addresses, C{'10.0.0.0/8'},
            C{'::1'}; host bits after the prefix are ignored.
        """
        super().__init__(
            (_unmapped(ipaddress.ip_network(c, strict=False)), True) for c in cidrs)


class TrustedProxies(NetworkSet):
    """
    The set of peers whose forwarding fields (or PROXY headers) are
    believed: C{address in trusted}.
    """

    __slots__ = ()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def authority(host: str, port: int, scheme: str = "") -> str:
    """
    C{host:port}, with an IPv6 host in brackets (C{[2001:db8::1]:443}).

    @param scheme: When given, the port is left out if it is that scheme's
        default (C{http} 80, C{https} 443), as a URL's authority, or a
        C{Host} field, is normally written.
    """
    bracketed = f"[{host}]" if ":" in host else host
    if scheme and _DEFAULT_PORTS.get(scheme) == port:
        return bracketed
    return f"{bracketed}:{port}"


def ip_port(address) -> Optional[Tuple[str, int]]:
    """
    The (host, port) of a Twisted IP address, or C{None} for another kind.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    return None


def twisted_address(host: str, port: int):
    """
    The Twisted TCP address of C{host} (IPv4 or IPv6) and C{port}.
    """
    cls = IPv6Address if ":" in host else IPv4Address
    return cls("TCP", host, port)
