# -*- test-case-name: tests.test_stream_sni -*-
"""
TLS passthrough: routing TLS connections by the server name their
ClientHello asks for, without decrypting them.

A TLS client's first message, the ClientHello, is sent in the clear and
carries the name of the site it wants in the C{server_name} extension
(SNI, RFC 6066 section 3).  The proxy reads that message (without
consuming it), looks the name up in the listener's passthrough routes
(RFC 8446 section 4.1.2 gives the layout) and then either:

  - relays the whole connection, ClientHello included, untouched, to a
    backend of the route's group (a L{twistproxy.stream.tcp.TCPRelay}):
    the backend holds the key and the certificate, and the proxy never
    sees the plaintext; or
  - on an HTTP listener with C{tls}, when no passthrough route names the
    server, terminates TLS as usual, with the listener's certificates;
  - on a C{tcp} listener, when no route matches (or the client sent no
    name), relays to the listener's C{upstream}, or closes the connection
    when it has none.

A ClientHello that is malformed, not TLS at all, larger than
L{MAX_CLIENT_HELLO} bytes, or not complete within the listener's
C{timeouts.request_head}, gets the connection closed: it is never
forwarded.  Each connection closed so (or for want of a route) has an
access log line, as a relayed one (reasons C{bad_client_hello},
C{client_hello_timeout}, C{no_route}).  Routes are tried in order, with exact names and wildcards
(C{*.example.com}: any name below C{example.com}) as in HTTP routes.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from twistproxy.config import Route, SNIRoute
from twistproxy.routing import Router
from twistproxy.proxyproto import Prefix

#: The largest ClientHello read (a post-quantum key share makes one of
#: about 2 KiB; 16 KiB is one full TLS record).
MAX_CLIENT_HELLO = 16384

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_HOST_NAME = re.compile(rb"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*\Z")


class ClientHelloError(ValueError):
    """
    Bytes that are not the start of a TLS connection with a valid
    ClientHello.
    """


def _record_size(data, offset: int) -> int:
    """
    The length of the TLS record whose 5-byte header is at C{offset},
    which must be a handshake record.
    """
    if data[offset] != _HANDSHAKE or data[offset + 1] != 3:
        raise ClientHelloError("not a TLS handshake record")
    size = int.from_bytes(data[offset + 3 : offset + 5], "big")
    if size == 0 or size > 16384:
        raise ClientHelloError("bad TLS record length")
    return size


class HelloAssembler:
    """
    Puts the ClientHello at the start of a connection together from the
    TLS records it is split into, as its bytes arrive.

    Only the bytes new to it are examined, however they are cut: a client
    that sends its ClientHello in one-byte records, one byte per read,
    costs time in proportion to its size, not to its square (about 11 CPU
    seconds per connection when every read parsed everything again).

    @param limit: The largest ClientHello accepted, in bytes.
    """

    def __init__(self, limit: int = MAX_CLIENT_HELLO):
        self._limit = limit
        self._pending = b""
        self._received = 0
        self._message = bytearray()

    def feed(self, data: bytes) -> Optional[bytes]:
        """
        Take the next bytes of the connection.

        @return: The ClientHello's body once it is complete, else C{None}.
        @raises ClientHelloError: when the bytes so far cannot start a
            valid ClientHello of at most C{limit} bytes.
        """
        self._received += len(data)
        pending = self._pending + data if self._pending else data
        message = self._message
        offset = 0
        try:
            while len(pending) - offset >= 5:
                size = _record_size(pending, offset)
                if len(pending) - offset - 5 < size:
                    break
                message += pending[offset + 5 : offset + 5 + size]
                offset += 5 + size
                if len(message) >= 4:
                    if message[0] != _CLIENT_HELLO:
                        raise ClientHelloError("first handshake message is not a ClientHello")
                    needed = 4 + int.from_bytes(message[1:4], "big")
                    if needed > self._limit:
                        raise ClientHelloError("ClientHello too large")
                    if len(message) >= needed:
                        return bytes(message[4:needed])
        finally:
            self._pending = pending[offset:]
        if self._received > self._limit:
            raise ClientHelloError("ClientHello too large")
        return None


class _Reader:
    """
    Reads length-prefixed fields; any overrun is a malformed message.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise ClientHelloError("truncated ClientHello")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def vector(self, length_size: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_size), "big"))

    @property
    def left(self) -> int:
        return len(self.data) - self.offset


def server_name(data: bytes, limit: int = MAX_CLIENT_HELLO) -> Optional[str]:
    """
    The server name in the ClientHello at the start of C{data}.

    @return: The name, lower-cased and without a trailing dot; C{''} when
        the ClientHello names no server; C{None} when C{data} is a valid
        beginning that needs more bytes.
    @raises ClientHelloError: when C{data} does not start with a valid
        ClientHello of at most C{limit} bytes.
    """
    body = HelloAssembler(limit).feed(data)
    if body is None:
        return None
    return hello_server_name(body)


def hello_server_name(body: bytes) -> str:
    """
    The server name in a ClientHello's C{body} (put together by a
    L{HelloAssembler}), or C{''}; as L{server_name}.
    """
    hello = _Reader(body)
    hello.take(2 + 32)  # legacy_version, random
    if len(hello.vector(1)) > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    suites = hello.vector(2)
    if not suites or len(suites) % 2:
        raise ClientHelloError("bad cipher suite list")
    if not hello.vector(1):
        raise ClientHelloError("no compression method")
    if not hello.left:
        return ""
    extensions = _Reader(hello.vector(2))
    if hello.left:
        raise ClientHelloError("bytes after the extensions")
    name = ""
    seen = set()
    while extensions.left:
        kind = int.from_bytes(extensions.take(2), "big")
        value = extensions.vector(2)
        if kind in seen:
            raise ClientHelloError("extension repeated")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(value)
    return name


def _host_name(extension: bytes) -> str:
    names = _Reader(_Reader(extension).vector(2))
    found = ""
    while names.left:
        kind = names.take(1)[0]
        value = names.vector(2)
        if kind != 0:
            continue
        if found:
            raise ClientHelloError("two host names")
        host = value.lower().rstrip(b".")
        if not host or len(host) > 253 or not _HOST_NAME.match(host):
            raise ClientHelloError("invalid host name")
        found = host.decode("ascii")
    if not found:
        raise ClientHelloError("server_name extension without a host name")
    return found


class SNIRouter:
    """
    The passthrough routes of one listener.

    @param default: The group of connections no route matches, or C{''}.
    """

    def __init__(self, routes: Sequence[SNIRoute], default: str = ""):
        self._router = Router([Route(upstream=r.upstream, hosts=r.hosts) for r in routes])
        self.default = default

    def group_for(self, name: str) -> str:
        """
        The group that connections for C{name} are relayed to, or C{''}.
        """
        route = self._router.match(name, "/", "") if name else None
        return route.upstream if route is not None else self.default


class _Sniffer(Prefix):
    """
    Reads a connection's ClientHello, then hands the connection over.
    """

    def __init__(self, factory: "SNIFactory", addr):
        # Room for the headers of the records the ClientHello is split into.
        super().__init__(factory.deadlines, factory.timeout, MAX_CLIENT_HELLO + 1024)
        self._factory = factory
        self._addr = addr
        self._hello = HelloAssembler()
        self._examined = 0

    def _examine(self, buffer: bytes):
        try:
            body = self._hello.feed(buffer[self._examined :])
            self._examined = len(buffer)
            if body is None:
                return None
            name = hello_server_name(body)
        except ClientHelloError:
            return self._refusal("bad_client_hello")
        factory = self._factory
        group = factory.router.group_for(name)
        if group:
            inner = factory.relays.relay(group, name, buffer)
            self._rest = b""
        elif factory.terminate is not None:
            inner = factory.terminate.buildProtocol(self._addr)
            self._rest = buffer
        else:
            inner = self._refusal("no_route", name)
        return inner

    def _refusal(self, reason: str, name: str = ""):
        # The relays close (and log) the connections refused here.
        self._rest = b""
        return self._factory.relays.refuse(reason, name, self._buffer)

    def _refuse(self) -> None:
        # Larger than a ClientHello may be.
        self._hand_over(self._refusal("bad_client_hello"))

    def expired(self) -> None:
        if self.inner is None:
            self._hand_over(self._refusal("client_hello_timeout"))


class SNIFactory:
    """
    The protocol factory of a listener with passthrough routes.

    @param router: The routes.
    @param relays: The L{twistproxy.stream.tcp.TCPRelayFactory} that
        relays passed-through connections.
    @param terminate: The factory of the connections that are not passed
        through (TLS terminated), or C{None}.
    @param timeout: Seconds a client has to send its ClientHello.
    """

    noisy = False

    def __init__(self, router: SNIRouter, relays, terminate, timeout: float):
        self.router = router
        self.relays = relays
        self.terminate = terminate
        self.timeout = timeout
        self.deadlines = relays.deadlines

    def buildProtocol(self, addr):
        sniffer = _Sniffer(self, addr)
        sniffer.factory = self
        return sniffer

    def doStart(self) -> None:
        if self.terminate is not None:
            self.terminate.doStart()

    def doStop(self) -> None:
        if self.terminate is not None:
            self.terminate.doStop()

    def reload(self, tls, path: str) -> None:
        """
        New certificates for the names that are terminated.
        """
        self.terminate.reload(tls, path)
