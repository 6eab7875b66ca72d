# -*- test-case-name: tests.test_proxyproto -*-
"""
The PROXY protocol, versions 1 and 2 (HAProxy's C{proxy-protocol.txt}).

A proxy that relays a connection hides the client's address from the
server: the server sees the proxy's.  The PROXY protocol puts it back: the
connecting side opens the connection with one header naming the original
source and destination addresses, then the relayed bytes follow untouched.
Version 1 is a line of text::

    PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\\r\\n

version 2 a binary block (a 12-byte signature, the command, the address
family and transport, a length, the addresses, and optional type-length-
value extensions such as C{PP2_TYPE_AUTHORITY}, the server name the client
asked for).

The header is believed only from peers the operator trusts (a load
balancer in front of the proxy): anybody else could claim any address.
L{ProxyHeaderFactory} wraps a listener's protocol factory: connections from
a trusted peer must start with a header, whose source becomes the
connection's peer address (C{transport.getPeer()}), so that logs, access
rules, hashing on the client address and the C{Forwarded} fields see the
real client; connections from other peers go to the wrapped factory
untouched, and a header they send is just data to the protocol behind (an
HTTP listener answers it 400).  A trusted peer whose header is malformed,
or that takes too long to send it, is disconnected.

L{encode_v1} and L{encode_v2} write the header that the proxy sends to
backends configured for it.  Before a TLS connection (an C{https} backend)
the header goes first, in the clear, then the TLS handshake
(L{HeaderThenTLSFactory}), as the servers that accept both expect.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from OpenSSL import SSL
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import directlyProvides, providedBy

from twistproxy.deadlines import NEVER, Deadlines
from twistproxy.net import twisted_address

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 line, CRLF included (the specification's bound).
V1_MAX = 107
#: Type of the TLV that carries the server name the client asked for.
PP2_TYPE_AUTHORITY = 0x02
#: Type of the TLV that says the client connection used TLS.
PP2_TYPE_SSL = 0x20
PP2_CLIENT_SSL = 0x01
# The most TLV bytes accepted after the addresses of a version 2 header.
_V2_MAX_EXTRA = 4096

Address = Tuple[str, int]


class ProxyHeaderError(ValueError):
    """
    Bytes that are not a valid PROXY protocol header.
    """


@dataclass(frozen=True)
class ProxyHeader:
    """
    What a PROXY protocol header says.

    @ivar version: 1 or 2.
    @ivar source: The client's (address, port), or C{None} when the header
        carries no addresses (C{UNKNOWN}, the C{LOCAL} command, or an
        address family other than IPv4 and IPv6).
    @ivar destination: The address and port the client connected to, or
        C{None} likewise.
    @ivar tlvs: Version 2 extensions as (type, value) pairs.
    """

    version: int
    source: Optional[Address] = None
    destination: Optional[Address] = None
    tlvs: Tuple[Tuple[int, bytes], ...] = ()


def parse(data: bytes) -> Tuple[Optional[ProxyHeader], int]:
    """
    Read a PROXY header, version 1 or 2, from the start of C{data}.

    @return: The header and the number of bytes it took, or C{(None, 0)}
        when C{data} is a valid beginning that needs more bytes.
    @raises ProxyHeaderError: when C{data} does not start with a valid
        header.
    """
    if data[:12] == V2_SIGNATURE[: len(data)] and not data.startswith(b"PROXY"):
        if len(data) < 16:
            return None, 0
        return _parse_v2(data)
    if not b"PROXY "[: len(data)] == data[:6]:
        raise ProxyHeaderError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("version 1 line longer than 107 bytes")
        return None, 0
    return _parse_v1(data[:end]), end + 2


def _parse_v1(line: bytes) -> ProxyHeader:
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        # The receiver must ignore whatever follows UNKNOWN.
        return ProxyHeader(1)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed version 1 line")
    family = socket.AF_INET if parts[1] == b"TCP4" else socket.AF_INET6
    source = (_v1_address(parts[2], family), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], family), _v1_port(parts[5]))
    return ProxyHeader(1, source, destination)


def _v1_address(raw: bytes, family: int) -> str:
    try:
        text = raw.decode("ascii")
        packed = socket.inet_pton(family, text)
    except (UnicodeDecodeError, OSError, ValueError):
        raise ProxyHeaderError(f"bad address {raw!r}") from None
    return socket.inet_ntop(family, packed)


def _v1_port(raw: bytes) -> int:
    # Decimal without leading zeros, as the specification requires.
    if not raw.isdigit() or (raw.startswith(b"0") and raw != b"0") or int(raw) > 65535:
        raise ProxyHeaderError(f"bad port {raw!r}")
    return int(raw)


def _parse_v2(data: bytes) -> Tuple[Optional[ProxyHeader], int]:
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad version 2 signature")
    version_command, family, length = data[12], data[13], struct.unpack(">H", data[14:16])[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError("version 2 signature with another version")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"unknown version 2 command {command}")
    address_size = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36}.get(family, 0)
    if length < address_size or length > address_size + _V2_MAX_EXTRA + 216:
        raise ProxyHeaderError("version 2 length does not fit its address family")
    if len(data) < 16 + length:
        return None, 0
    body = data[16 : 16 + length]
    source = destination = None
    if command == 1 and address_size:
        width = 4 if address_size == 12 else 16
        cls = ipaddress.IPv4Address if width == 4 else ipaddress.IPv6Address
        src, dst = body[:width], body[width : 2 * width]
        sport, dport = struct.unpack(">HH", body[2 * width : 2 * width + 4])
        source = (str(cls(src)), sport)
        destination = (str(cls(dst)), dport)
    tlvs = []
    rest = body[address_size:] if address_size else b""
    while rest:
        if len(rest) < 3:
            raise ProxyHeaderError("truncated version 2 TLV")
        kind, size = rest[0], struct.unpack(">H", rest[1:3])[0]
        if len(rest) < 3 + size:
            raise ProxyHeaderError("truncated version 2 TLV")
        tlvs.append((kind, rest[3 : 3 + size]))
        rest = rest[3 + size :]
    return ProxyHeader(2, source, destination, tuple(tlvs)), 16 + length


def _family(source: Address, destination: Address) -> int:
    versions = {ipaddress.ip_address(source[0]).version,
                ipaddress.ip_address(destination[0]).version}
    return 4 if versions == {4} else 6 if versions == {6} else 0


def _mapped(host: str) -> str:
    # One IPv4 and one IPv6 end: both written as IPv6 (v4-mapped).
    address = ipaddress.ip_address(host)
    return f"::ffff:{address}" if address.version == 4 else host


def encode_v1(source: Optional[Address], destination: Optional[Address]) -> bytes:
    """
    A version 1 header; C{PROXY UNKNOWN} when an address is not IP.
    """
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = _family(source, destination)
    if family == 0:
        source, destination = (_mapped(source[0]), source[1]), (_mapped(destination[0]), destination[1])
    line = "PROXY TCP%d %s %s %d %d\r\n" % (
        4 if family == 4 else 6, source[0], destination[0], source[1], destination[1])
    return line.encode("ascii")


def encode_v2(source: Optional[Address], destination: Optional[Address],
              tlvs: Sequence[Tuple[int, bytes]] = (), local: bool = False) -> bytes:
    """
    A version 2 header for a TCP connection (the C{PROXY} command, or
    C{LOCAL} for the proxy's own connections), with the given TLVs.
    """
    extra = b"".join(struct.pack(">BH", kind, len(value)) + value for kind, value in tlvs)
    if local or source is None or destination is None:
        command, family, addresses = 0x20 if local else 0x21, 0x00, b""
    else:
        version = _family(source, destination)
        if version == 0:
            source = (_mapped(source[0]), source[1])
            destination = (_mapped(destination[0]), destination[1])
            version = 6
        family = 0x11 if version == 4 else 0x21
        command = 0x21
        addresses = (
            ipaddress.ip_address(source[0]).packed + ipaddress.ip_address(destination[0]).packed
            + struct.pack(">HH", source[1], destination[1])
        )
    payload = addresses + extra
    return V2_SIGNATURE + bytes([command, family]) + struct.pack(">H", len(payload)) + payload


def encode(version: str, source: Optional[Address], destination: Optional[Address],
           server_name: str = "", tls: bool = False) -> bytes:
    """
    The header a backend configured for C{version} (C{'v1'} or C{'v2'})
    gets.  Version 2 also carries the server name the client asked for
    (C{PP2_TYPE_AUTHORITY}) and, when the proxy terminated TLS, a
    C{PP2_TYPE_SSL} saying so.
    """
    if version == "v1":
        return encode_v1(source, destination)
    tlvs = []
    if server_name:
        tlvs.append((PP2_TYPE_AUTHORITY, server_name.encode("idna")))
    if tls:
        # client flags, then a 32-bit verify result of 0 (no failure).
        tlvs.append((PP2_TYPE_SSL, bytes([PP2_CLIENT_SSL]) + b"\x00\x00\x00\x00"))
    return encode_v2(source, destination, tlvs)


def tls_server_name(transport) -> Optional[str]:
    """
    For a connection whose TLS the proxy terminates, the server name the
    client asked for (C{''} when it sent none); C{None} for any other
    connection.
    """
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if not isinstance(handle, SSL.Connection):
        return None
    name = handle.get_servername()
    return name.decode("ascii", "replace").lower() if name else ""


class _HeaderThenTLS(TLSMemoryBIOProtocol):
    """
    A TLS client connection that sends its factory's PROXY header in the
    clear before its ClientHello.
    """

    def makeConnection(self, transport) -> None:
        transport.write(self.factory.header)
        super().makeConnection(transport)


class HeaderThenTLSFactory(TLSMemoryBIOFactory):
    """
    Opens one TLS connection to a backend configured for the PROXY
    protocol: C{header} first, in the clear, then the handshake.  (Over
    C{connectSSL} the protocol's first write would be encrypted: nginx's
    C{listen ... ssl proxy_protocol} or HAProxy's C{accept-proxy} would
    read a ClientHello where the header must be.)

    @param creator: The L{IOpenSSLClientConnectionCreator} of the backend.
    @param wrapped: The factory of the protocol spoken inside TLS.
    """

    protocol = _HeaderThenTLS

    def __init__(self, reactor, creator, wrapped, header: bytes):
        super().__init__(creator, True, wrapped, clock=reactor)
        self.header = header


class Prefix(Protocol):
    """
    The first protocol of a connection that reads a prefix of it (a PROXY
    header, a TLS ClientHello), then hands the connection to the protocol
    that serves it.

    Subclasses implement C{_examine(buffer)}, which returns the protocol
    to hand over to (and may have changed C{self._transport_for_inner})
    or C{None} to wait for more; it calls C{self._refuse()} to close the
    connection.  Until then reads are bounded by C{limit} bytes and
    C{timeout} seconds on the factory's L{Deadlines}.  Afterwards every
    event goes to the inner protocol.
    """

    deadline = NEVER

    def __init__(self, deadlines: Deadlines, timeout: float, limit: int):
        self._deadlines = deadlines
        self._timeout = timeout
        self._limit = limit
        self._buffer = b""
        self.inner = None

    def connectionMade(self) -> None:
        self.deadline = self._deadlines.clock.seconds() + self._timeout
        self._deadlines.add(self)

    def expired(self) -> None:
        if self.inner is None:
            self._refuse()

    def _refuse(self) -> None:
        self._deadlines.discard(self)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        self._buffer += data
        if self.transport.disconnecting:
            return
        inner = self._examine(self._buffer)
        if inner is None:
            if len(self._buffer) > self._limit and not self.transport.disconnecting:
                self._refuse()
            return
        self._hand_over(inner)

    def _hand_over(self, inner) -> None:
        """
        From now on, C{inner} serves the connection; it gets C{self._rest}.
        """
        self._deadlines.discard(self)
        self.deadline = NEVER
        rest, self._buffer = self._rest, b""
        self.inner = inner
        if IHalfCloseableProtocol.providedBy(inner):
            directlyProvides(self, providedBy(self), IHalfCloseableProtocol)
        inner.makeConnection(self._transport_for_inner())
        if rest and not self.transport.disconnecting:
            inner.dataReceived(rest)

    # What the subclass's _examine leaves: the bytes for the inner protocol.
    _rest = b""

    def _transport_for_inner(self):
        return self.transport

    def _examine(self, buffer: bytes):
        raise NotImplementedError()

    def readConnectionLost(self) -> None:
        # Only declared (see dataReceived) when the inner protocol takes it.
        self.inner.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.inner.writeConnectionLost()

    def connectionLost(self, reason) -> None:
        self._deadlines.discard(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)


class _ProxiedTransport:
    """
    The real transport of a connection, except that C{getPeer} and
    C{getHost} answer what its PROXY header said.
    """

    def __init__(self, transport, peer, host):
        self._transport = transport
        self._peer = peer
        self._host = host
        directlyProvides(self, providedBy(transport))

    def getPeer(self):
        return self._peer

    def getHost(self):
        return self._host

    def __getattr__(self, name):
        return getattr(self._transport, name)


class _HeaderReader(Prefix):
    """
    Reads the PROXY header of a trusted peer's connection.
    """

    def __init__(self, factory: "ProxyHeaderFactory", addr):
        super().__init__(factory.deadlines, factory.timeout, 16 + 216 + _V2_MAX_EXTRA)
        self._factory = factory
        self._proxied = None

    def _examine(self, buffer: bytes):
        try:
            header, used = parse(buffer)
        except ProxyHeaderError:
            self._refuse()
            return None
        if header is None:
            return None
        self._rest = buffer[used:]
        transport = self.transport
        peer, host = transport.getPeer(), transport.getHost()
        if header.source is not None:
            peer = twisted_address(*header.source)
            host = twisted_address(*header.destination)
        inner = self._factory.wrapped.buildProtocol(peer)
        if inner is None:
            transport.loseConnection()
            return None
        self._proxied = _ProxiedTransport(transport, peer, host)
        return inner

    def _transport_for_inner(self):
        return self._proxied


class ProxyHeaderFactory:
    """
    Wraps a listener's protocol factory: connections from C{trusted}
    peers must start with a PROXY header (see the module's docstring).

    @param trusted: A predicate on the peer's IP address (C{str}).
    @param timeout: Seconds a trusted peer has to send its header.
    """

    def __init__(self, wrapped, trusted, clock, timeout: float):
        self.wrapped = wrapped
        self.trusted = trusted
        self.timeout = timeout
        self.deadlines = Deadlines(clock)

    def buildProtocol(self, addr):
        if self.trusted(getattr(addr, "host", "")):
            reader = _HeaderReader(self, addr)
            reader.factory = self
            return reader
        return self.wrapped.buildProtocol(addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def __getattr__(self, name):
        # The wrapped factory's own attributes (logPrefix, noisy, reload).
        return getattr(self.wrapped, name)
