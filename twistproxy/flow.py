# -*- test-case-name: tests.test_proxy -*-
"""
Flow control between the two connections of a proxied exchange.

A proxy reads from one connection and writes to the other.  When the
writing side cannot keep up (its transport's buffer is full), the reading
side must stop reading, or the proxy's memory grows with the difference.
Twisted transports report a full buffer to a registered streaming producer
(L{IPushProducer}); a L{FullRelay} is that producer, and relays "full" and
"drained" to whoever must pause the other connection.
"""

from __future__ import annotations

import socket
import sys
from typing import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.internet.main import CONNECTION_DONE
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IPushProducer)
class FullRelay:
    """
    Registered on a transport, calls C{on_full(True)} when its write buffer
    fills up and C{on_full(False)} when it has drained.
    """

    __slots__ = ("_on_full",)

    def __init__(self, on_full: Callable[[bool], None]):
        self._on_full = on_full

    def pauseProducing(self) -> None:
        self._on_full(True)

    def resumeProducing(self) -> None:
        self._on_full(False)

    def stopProducing(self) -> None:
        # The connection is closing; its own connectionLost handles that.
        pass


def _sends_now(transport) -> bool:
    """
    Whether bytes written to the TCP transport C{transport} may go to its
    socket at once: nothing is left to send before them and it is open.
    """
    return (
        # Twisted's own bookkeeping of what is left to send (private: a
        # Twisted without it never sends at once).
        getattr(transport, "_tempDataLen", 1) == 0
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    )


def write_now(transport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when possible.

    C{transport.write} only appends to a buffer and asks the reactor to
    send it on its next iteration: one more trip through the reactor (and
    two epoll changes) per write.  When the transport is a plain TCP
    connection with nothing buffered, the bytes can go to the socket
    straight away; whatever the kernel does not take (or any error) is left
    to C{transport.write}, which buffers it, applies back-pressure and
    reports a lost connection exactly as usual.  Any other transport (TLS,
    in-memory, UNIX) just gets C{write}.
    """
    if type(transport) in _DIRECT and _sends_now(transport):
        # The socket's own send rather than the transport's writeSomeData,
        # which adds two Python calls (a memoryview for Windows' sake, a
        # retry on EINTR that Python does itself since 3.5) to every send.
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Full (EAGAIN, ENOBUFS) or lost: write() buffers, and the
            # transport's next attempt reports a lost connection.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


# Bytes from which a body is sent with its head by one sendmsg rather than
# joined to it (write_all_now).  Measured on a socket pair, a 300-byte
# head with a 32 KiB body: PyPy 6.3 instead of 8.6 us, CPython 7.5 instead
# of 8.7 (64 KiB: 12 instead of 17, 11 instead of 12); with 8 KiB, even.
SENDMSG_MIN = 16384


def write_all_now(transport, chunks: list) -> None:
    """
    Write the bytes objects C{chunks} to C{transport} in order, as
    L{write_now} writes one, but with one C{sendmsg} (writev) when the
    bytes can go to the socket at once: no copy of them joined into one
    bytes object, which for a large body on PyPy is also one large object
    fewer for its garbage collector.  Whatever the kernel does not take is
    left to C{transport.writeSequence}; any other transport gets them
    joined, in one C{write}.
    """
    if type(transport) in _DIRECT and _sends_now(transport):
        try:
            sent = transport.socket.sendmsg(chunks)
        except OSError:
            # Full, lost, or more chunks than the kernel takes at once.
            sent = 0
        for i, chunk in enumerate(chunks):
            if sent < len(chunk):
                transport.writeSequence([chunk[sent:] if sent else chunk] + chunks[i + 1:])
                return
            sent -= len(chunk)
        return
    transport.write(b"".join(chunks))


def lose_now(transport) -> None:
    """
    Close C{transport} once what was written has been sent: at once when
    nothing is left to send.

    C{transport.loseConnection} on a TCP transport always waits for the
    reactor's next turn (an epoll registration for writing, a C{doWrite}
    that finds nothing to write, then the close), even with an empty
    buffer: a third of the reactor events of a connection that carries one
    request.  With nothing buffered and no producer, this closes the
    socket and calls C{connectionLost} now, as C{loseConnection} itself
    does on a connection whose writing side is already shut.  Any other
    transport, or one with bytes still to send, gets C{loseConnection}.
    """
    if type(transport) in _DIRECT and transport.producer is None and _sends_now(transport):
        transport.disconnecting = True
        transport.stopReading()
        transport.connectionLost(_DONE)
        return
    transport.loseConnection()


def no_delay(transport) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport (a no-op on others).

    The proxy already joins what it sends into one write per event; Nagle
    would only hold back the last small segment of a response for the
    peer's delayed acknowledgement.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def quick_ack(transport) -> None:
    """
    Acknowledge what was just read at once, on Linux TCP transports.

    Call it after a read that leaves the proxy waiting for more of the same
    message.  Linux delays acknowledgements, and a peer that holds back the
    tail of a message until its earlier segments are acknowledged (Nagle,
    or nginx's C{tcp_nopush} with C{sendfile}) then waits for the delayed
    acknowledgement timer: 40 ms added to a 64 KiB response in our
    benchmark.  The flag is not sticky, so it is set again after each such
    read; one cheap system call, and none for messages that arrive whole.
    """
    if _QUICKACK is not None and type(transport) in _DIRECT:
        transport.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


# What one read from a backend may take: a 64 KiB body and its head.  On
# PyPy, 64 KiB and a head of up to 16 KiB only: a bytes object below its
# large-object size (132 KiB on 64 bits) is made in the nursery and freed
# by the next minor collection, as Twisted's 64 KiB reads are, while a
# larger one waits for a major collection (with reads of 256 KiB, the
# proxy's peak memory while 1 GiB streamed to a slow client grew from 33
# to 51 MiB over its idle size; tests.test_e2e StreamingTests).
READ_SIZE = 262144 if sys.implementation.name == "cpython" else 81920


def large_reads(transport) -> None:
    """
    Let each read from a TCP transport take up to L{READ_SIZE} bytes.

    Twisted reads at most 64 KiB per event, so a 64 KiB response, which
    comes with its head, always took two reads from the backend, two trips
    through the reactor and two sends to the client.  When the kernel
    holds more, one larger read takes it all; the bytes object is only as
    large as what was read.  Other transports (TLS, in-memory) are left
    alone.
    """
    if type(transport) in _DIRECT:
        transport.bufferSize = READ_SIZE


def _direct_transports() -> frozenset:
    from twisted.internet import tcp

    return frozenset([tcp.Server, tcp.Client])


# Exactly these classes: a subclass may override write() with reasons of
# its own.
_DIRECT = _direct_transports()
# One instance serves every close, as in Twisted's own reactor.
_DONE = Failure(CONNECTION_DONE)
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
