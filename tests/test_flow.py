"""
Tests for L{twistproxy.flow}.
"""

from __future__ import annotations

import socket
import sys
from unittest import SkipTest

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistproxy.flow import (
    READ_SIZE, FullRelay, large_reads, lose_now, no_delay, quick_ack, write_all_now, write_now,
)


def _connection(test, sndbuf=None):
    """
    A real L{tcp.Server} transport over one end of a socket pair, on a
    memory reactor, and the socket at the other end.
    """
    ours, theirs = socket.socketpair()
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    ours.setblocking(False)
    theirs.setblocking(False)
    reactor = MemoryReactor()
    transport = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    test.addCleanup(ours.close)
    test.addCleanup(theirs.close)
    return transport, theirs, reactor


def _tcp_connection(test):
    """
    A real L{tcp.Server} transport over a loopback TCP socket (socket
    options such as TCP_NODELAY need TCP, not a socket pair), and the
    socket.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sock = socket.create_connection(listener.getsockname())
    test.addCleanup(listener.close)
    test.addCleanup(sock.close)
    transport = tcp.Server(sock, Protocol(), ("127.0.0.1", 1), None, 1, MemoryReactor())
    return transport, sock


def _drain(sock) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class WriteNowTests(SynchronousTestCase):
    """
    L{write_now} sends at once when it can, and falls back to buffering.
    """

    def test_sends_immediately(self):
        """
        With nothing buffered, the bytes reach the peer before the reactor
        runs, and no write is scheduled.
        """
        transport, theirs, reactor = _connection(self)
        write_now(transport, b"hello")
        self.assertEqual(_drain(theirs), b"hello")
        self.assertEqual(reactor.getWriters(), [])

    def test_partial_send_buffers_rest(self):
        """
        What the kernel does not take is buffered in the transport, in
        order, and a write is scheduled for it.
        """
        transport, theirs, reactor = _connection(self, sndbuf=4096)
        data = bytes(range(256)) * 8192  # 2 MiB, more than the socket takes
        write_now(transport, data)
        self.assertEqual(reactor.getWriters(), [transport])
        received = _drain(theirs)
        self.assertLess(len(received), len(data))
        self.assertEqual(b"".join(transport._tempDataBuffer), data[len(received):])

    def test_keeps_order_behind_buffered_data(self):
        """
        Once something is buffered, later writes queue behind it instead of
        overtaking it.
        """
        transport, theirs, reactor = _connection(self)
        transport.write(b"first ")
        write_now(transport, b"second")
        self.assertEqual(_drain(theirs), b"")
        self.assertEqual(b"".join(transport._tempDataBuffer), b"first second")

    def test_failed_send_buffers(self):
        """
        When the socket refuses the send (here the peer is gone), the bytes
        are left to C{write}, which buffers them for the transport to find
        the lost connection itself, rather than raising to the caller.
        """
        transport, theirs, reactor = _connection(self)
        theirs.close()
        write_now(transport, b"lost")
        self.assertEqual(reactor.getWriters(), [transport])
        self.assertEqual(b"".join(transport._tempDataBuffer), b"lost")

    def test_other_transports_get_write(self):
        """
        Transports that are not plain TCP connections just get write().
        """
        transport = StringTransport()
        write_now(transport, b"data")
        self.assertEqual(transport.value(), b"data")


class WriteAllNowTests(SynchronousTestCase):
    """
    L{write_all_now} sends several bytes objects at once, in one
    C{sendmsg}, when it can, and falls back to buffering them in order.
    """

    def test_sends_immediately(self):
        """
        With nothing buffered, all the chunks reach the peer, in order,
        before the reactor runs, and no write is scheduled.
        """
        transport, theirs, reactor = _connection(self)
        write_all_now(transport, [b"head ", b"body"])
        self.assertEqual(_drain(theirs), b"head body")
        self.assertEqual(reactor.getWriters(), [])

    def test_partial_send_buffers_rest(self):
        """
        What the kernel does not take, from within any chunk, is buffered
        in the transport in order, and a write is scheduled for it.
        """
        for head in (b"h" * 100, b"h" * 65536):
            transport, theirs, reactor = _connection(self, sndbuf=4096)
            data = bytes(range(256)) * 8192  # 2 MiB, more than the socket takes
            write_all_now(transport, [head, data, b"tail"])
            self.assertEqual(reactor.getWriters(), [transport])
            received = _drain(theirs)
            self.assertGreater(len(received), 0)
            self.assertEqual(
                received + b"".join(transport._tempDataBuffer), head + data + b"tail")

    def test_keeps_order_behind_buffered_data(self):
        """
        Once something is buffered, the chunks queue behind it.
        """
        transport, theirs, reactor = _connection(self)
        transport.write(b"first ")
        write_all_now(transport, [b"second ", b"third"])
        self.assertEqual(_drain(theirs), b"")
        self.assertEqual(b"".join(transport._tempDataBuffer), b"first second third")

    def test_failed_send_buffers(self):
        """
        When the socket refuses the send (here the peer is gone), all the
        chunks are left to the transport, which finds the lost connection
        itself, rather than raising to the caller.
        """
        transport, theirs, reactor = _connection(self)
        theirs.close()
        write_all_now(transport, [b"lo", b"st"])
        self.assertEqual(reactor.getWriters(), [transport])
        self.assertEqual(b"".join(transport._tempDataBuffer), b"lost")

    def test_other_transports_get_write(self):
        """
        Transports that are not plain TCP connections get the chunks
        joined, in one write().
        """
        transport = StringTransport()
        writes = []
        transport.write = writes.append
        write_all_now(transport, [b"da", b"ta"])
        self.assertEqual(writes, [b"data"])


class FullRelayTests(SynchronousTestCase):
    """
    L{FullRelay} turns producer calls into full/drained notifications.
    """

    def test_relays(self):
        """
        pauseProducing means full, resumeProducing means drained.
        """
        calls = []
        relay = FullRelay(calls.append)
        relay.pauseProducing()
        relay.resumeProducing()
        relay.stopProducing()
        self.assertEqual(calls, [True, False])


class NoDelayTests(SynchronousTestCase):
    """
    L{no_delay} disables Nagle's algorithm where there is one.
    """

    def test_tcp(self):
        """
        On a TCP transport TCP_NODELAY is set.
        """
        transport, sock = _tcp_connection(self)
        no_delay(transport)
        self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def test_other(self):
        """
        Transports without the option are left alone.
        """
        no_delay(StringTransport())


class QuickAckTests(SynchronousTestCase):
    """
    L{quick_ack} sets TCP_QUICKACK on TCP transports, where Linux has it.
    """

    def test_tcp(self):
        """
        On a TCP transport the flag is set (Linux reports it back as set
        until the kernel clears it again).
        """
        if not hasattr(socket, "TCP_QUICKACK"):
            raise SkipTest("no TCP_QUICKACK on this platform")
        transport, sock = _tcp_connection(self)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        quick_ack(transport)
        self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))

    def test_other(self):
        """
        Other transports are left alone.
        """
        quick_ack(StringTransport())


class LargeReadsTests(SynchronousTestCase):
    """
    L{large_reads} lets one read from a TCP transport take more than
    Twisted's 64 KiB.
    """

    def test_tcp(self):
        """
        A 64 KiB body and its head, all in the socket, arrive in one
        C{dataReceived}.
        """
        transport, theirs, _ = _connection(self)
        received = []
        transport.protocol.dataReceived = received.append
        large_reads(transport)
        message = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + b"x" * 65536
        theirs.setblocking(True)
        theirs.sendall(message)
        transport.doRead()
        self.assertEqual(received, [message])
        self.assertEqual(transport.bufferSize, READ_SIZE)

    def test_other(self):
        """
        Other transports are left alone.
        """
        transport = StringTransport()
        large_reads(transport)
        self.assertFalse(hasattr(transport, "bufferSize"))

    def test_pypy_nursery(self):
        """
        Under PyPy, a read is never larger than its large-object size
        (132 KiB): such bytes objects are freed at major collections only.
        """
        if sys.implementation.name == "cpython":
            self.assertEqual(READ_SIZE, 262144)
        else:
            self.assertLess(READ_SIZE, 132 * 1024)


class _Recorder(Protocol):
    def __init__(self):
        self.lost = []

    def connectionLost(self, reason):
        self.lost.append(reason)


class LoseNowTests(SynchronousTestCase):
    """
    L{lose_now} closes a TCP transport with nothing left to send at once,
    and leaves everything else to C{loseConnection}.
    """

    def _connection(self):
        transport, theirs, _ = _connection(self)
        protocol = transport.protocol = _Recorder()
        return transport, theirs, protocol

    def test_nothing_buffered(self):
        """
        With nothing buffered the protocol learns of a clean close and the
        peer reads the end of the stream, without a reactor turn.
        """
        transport, theirs, protocol = self._connection()
        write_now(transport, b"answer")
        lose_now(transport)
        self.assertEqual(len(protocol.lost), 1)
        self.assertTrue(protocol.lost[0].check(ConnectionDone))
        self.assertFalse(transport.connected)
        self.assertEqual(_drain(theirs), b"answer")
        self.assertEqual(theirs.recv(10), b"")

    def test_buffered(self):
        """
        Bytes still buffered are sent first: the close waits for them.
        """
        transport, theirs, protocol = self._connection()
        transport.write(b"queued")
        lose_now(transport)
        self.assertEqual(protocol.lost, [])
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.connected)

    def test_twice(self):
        """
        A second close of a closed transport changes nothing.
        """
        transport, theirs, protocol = self._connection()
        lose_now(transport)
        lose_now(transport)
        self.assertEqual(len(protocol.lost), 1)

    def test_other(self):
        """
        Other transports get C{loseConnection}.
        """
        transport = StringTransport()
        lose_now(transport)
        self.assertTrue(transport.disconnecting)
