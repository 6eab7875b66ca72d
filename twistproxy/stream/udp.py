# -*- test-case-name: tests.test_stream_udp -*-
"""
UDP proxying: datagrams relayed per client "session".

UDP has no connections, so a C{protocol = "udp"} listener makes its own:
a I{session} per client address and port.  The first datagram from a
client picks a backend with the group's balancer (a hashing balancer keeps
a client on one backend across sessions) and opens a UDP socket of the
proxy's own, connected to that backend; the client's datagrams go out
through it, and the backend's replies, which only that socket receives,
go back to that client from the listener's address.  This is how DNS,
syslog, game and VPN traffic keeps working behind the proxy.

A session ends after C{timeouts.udp_idle} seconds without a datagram
either way (on the shared coarse timer of L{twistproxy.deadlines}), or
when the backend's port answers "unreachable".  A listener keeps at most
C{max_sessions} sessions: datagrams from further clients are dropped
(UDP has no way to refuse), and counted.  Each session that ends is one
access log line, as for a TCP connection.

The listener's connection filters (access rules, rate limits, connection
limits: L{twistproxy.filters}) judge each new session by its client's
address before a backend is picked; they are told when it ends.  The
datagrams of a refused session are dropped and counted (C{refused}), not
logged one by one.  While a filter takes its time (a rate limit counted in
Redis), at most L{PENDING_DATAGRAMS} of that client's datagrams wait for
the verdict, for at most C{timeouts.connect} seconds; the others are
dropped.

Backends of UDP groups are IP addresses (a connected UDP socket needs
one).  On Twisted's own reactors a session's socket is a L{SessionSocket}
rather than a Twisted UDP port, which would log two lines per session
(C{starting on}, C{Closed}) beside its access log line.
  The listener's endpoint is C{udp:PORT} with an optional
C{:interface=ADDRESS} (C{udp:53:interface=127.0.0.1}); colons in an IPv6
address are escaped as in Twisted's endpoint strings (C{\\:\\:1}).
"""

from __future__ import annotations

import errno
import re
import socket
from typing import Callable, Dict, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from twistproxy.config import Timeouts
from twistproxy.deadlines import Deadlines
from twistproxy.stream.tcp import StreamInfo
from twistproxy.upstream.backend import Backend

Address = Tuple[str, int]

# The datagrams of one client kept while its new session is being judged.
PENDING_DATAGRAMS = 8
#: The largest datagram relayed whole (a UDP payload over IPv4 is at most
#: 65507 bytes).  Twisted reads 8192 bytes by default and silently drops
#: the rest of a longer datagram: a DNS answer with EDNS, for one.
MAX_DATAGRAM = 65535


class Session:
    """
    One client (address and port) and its backend.

    @ivar client_address: The client's IP address.
    @ivar client: The client's (address, port).
    @ivar backend: Its backend.
    @ivar bytes_received: Datagram bytes from the client.
    @ivar bytes_sent: Datagram bytes to the client.
    @ivar started: When its first datagram came, in reactor seconds.
    @ivar reason: Why it ended (C{'idle_timeout'}, C{'upstream_refused'},
        C{'shutdown'}).
    """

    protocol = "UDP"
    server_name = ""
    status = 200

    def __init__(self, factory: "UDPProxy", client: Address, group, backend: Backend,
                 now: float):
        self.factory = factory
        self.group = group
        self.client = client
        self.client_address = client[0]
        self.backend = backend
        self.started = now
        self.deadline = now + factory.timeouts.udp_idle
        self.bytes_received = 0
        self.bytes_sent = 0
        self.reason = ""
        self.port = None
        # The filter chain that accepted it (told when it ends), or None.
        self.filters = None

    def send(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.deadline = self.factory.clock.seconds() + self.factory.timeouts.udp_idle
        self.port.write(data)

    def expired(self) -> None:
        self.factory.end(self, "idle_timeout")


class _Judged:
    """
    A client whose new session the listener's filters are judging: its
    first datagrams wait here for the verdict, for a bounded time.
    """

    def __init__(self, factory: "UDPProxy", client: Address, deadline: float):
        self.factory = factory
        self.client = client
        self.deadline = deadline
        self.datagrams: list = []

    def expired(self) -> None:
        self.factory.judging_expired(self)


class _SessionSocket(DatagramProtocol):
    """
    The proxy's socket of one session, connected to its backend.
    """

    # One log line per session is the access log's.
    noisy = False

    def __init__(self, session: Session):
        self.session = session

    def datagramReceived(self, data: bytes, addr) -> None:
        session = self.session
        factory = session.factory
        session.bytes_sent += len(data)
        session.deadline = factory.clock.seconds() + factory.timeouts.udp_idle
        factory.transport.write(data, session.client)

    def connectionRefused(self) -> None:
        # ICMP port unreachable: nothing listens there (now).
        self.session.factory.end(self.session, "upstream_refused")


class SessionSocket:
    """
    A UDP socket connected to one address, read by the reactor, delivering
    to a L{DatagramProtocol}: the part of a Twisted UDP port a session
    uses (C{write}, C{stopListening}), without its log lines.

    @ivar protocol: The protocol it delivers to.
    """

    # Datagrams read at most per turn of the reactor, as Twisted's ports do.
    _BATCH = 16

    def __init__(self, reactor, protocol: DatagramProtocol, host: str, port: int):
        """
        Open the socket, connect it to C{(host, port)} (an IP address) and
        start reading.

        @raises OSError: if it cannot be opened or connected.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        self._reactor = reactor
        self._socket = sock
        self._peer = (host, port)
        self.protocol = protocol
        protocol.makeConnection(self)
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._socket.fileno()

    def logPrefix(self) -> str:
        return "udp-session"

    def doRead(self) -> None:
        for _ in range(self._BATCH):
            try:
                data = self._socket.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                self.protocol.connectionRefused()
                return
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            self.protocol.datagramReceived(data, self._peer)

    def write(self, data: bytes) -> None:
        """
        Send one datagram; like UDP itself, drop it when the socket's
        buffer is full.
        """
        try:
            self._socket.send(data)
        except ConnectionRefusedError:
            self.protocol.connectionRefused()
        except (BlockingIOError, InterruptedError):
            pass

    def stopListening(self) -> None:
        if self._socket.fileno() == -1:
            return
        self._reactor.removeReader(self)
        self._socket.close()
        self.protocol.doStop()

    def connectionLost(self, reason: Failure) -> None:
        # What the reactor calls when doRead raised.
        self.stopListening()


def _session_socket(reactor, protocol: DatagramProtocol, host: str, port: int):
    """
    A session's socket connected to C{(host, port)}: a L{SessionSocket}
    on Twisted's own reactors, else (a test's reactor, another
    implementation) a port of the reactor's C{listenUDP}.
    """
    if isinstance(reactor, PosixReactorBase):
        return SessionSocket(reactor, protocol, host, port)
    interface = "::" if ":" in host else "0.0.0.0"
    listened = reactor.listenUDP(0, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM)
    listened.connect(host, port)
    return listened


class UDPProxy(DatagramProtocol):
    """
    The protocol of one C{udp} listener.

    @ivar sessions: The sessions by client address and port.
    @ivar dropped: Datagrams dropped because no session could be made (at
        C{max_sessions}, no backend available, refused by a filter).
    @ivar refused: Those of them refused by the listener's filters.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>} of connection filters, or C{None}.
    """

    noisy = False

    def __init__(self, reactor, listener: str, upstream: str, groups, timeouts: Timeouts,
                 max_sessions: int = 10000,
                 on_end: Optional[Callable[[Session], None]] = None,
                 filters=None):
        self.reactor = self.clock = reactor
        self.listener = listener
        self.upstream = upstream
        self.groups = groups
        self.timeouts = timeouts
        self.max_sessions = max_sessions
        self.sessions: Dict[Address, Session] = {}
        self.deadlines = Deadlines(reactor)
        self.dropped = 0
        self.refused = 0
        self.filters = filters
        self._on_end = on_end
        self._judging: Dict[Address, _Judged] = {}

    def datagramReceived(self, data: bytes, addr) -> None:
        session = self.sessions.get(addr)
        if session is None:
            session = self._new(data, addr)
            if session is None:
                return
        session.send(data)

    def _new(self, data: bytes, client: Address) -> Optional[Session]:
        """
        The session of a client that has none, after the filters accepted
        it; C{None} when the datagram was dropped or waits for a verdict.
        """
        judged = self._judging.get(client)
        if judged is not None:
            if len(judged.datagrams) < PENDING_DATAGRAMS:
                judged.datagrams.append(data)
            else:
                self.dropped += 1
            return None
        # Those being judged count: each may become a session.
        if len(self.sessions) + len(self._judging) >= self.max_sessions:
            self.dropped += 1
            return None
        chain = self.filters
        if chain is not None:
            verdict = chain.admit(client[0])
            if isinstance(verdict, Deferred):
                judged = _Judged(self, client, self.clock.seconds() + self.timeouts.connect)
                judged.datagrams.append(data)
                self._judging[client] = judged
                self.deadlines.add(judged)
                verdict.addCallback(self._verdict, judged, chain)
                return None
            if verdict is not None:
                self.refused += 1
                self.dropped += 1
                return None
        session = self._open(client)
        if session is None:
            self.dropped += 1
            if chain is not None:
                chain.connection_lost(client[0])
        else:
            session.filters = chain
        return session

    def _verdict(self, verdict, judged: _Judged, chain) -> None:
        """
        The filters' verdict on C{judged} came: open its session and send
        what waited, or drop it.
        """
        client = judged.client
        if self._judging.get(client) is not judged:
            # Timed out before: only the filters that accepted it care.
            if verdict is None:
                chain.connection_lost(client[0])
            return
        self._forget(judged)
        waited = judged.datagrams
        session = None
        if verdict is not None:
            self.refused += len(waited)
        else:
            session = self._open(client)
            if session is None:
                chain.connection_lost(client[0])
        if session is None:
            self.dropped += len(waited)
            return
        session.filters = chain
        for data in waited:
            session.send(data)

    def judging_expired(self, judged: _Judged) -> None:
        """
        No verdict on C{judged} in time: its datagrams are dropped.
        """
        self._forget(judged)
        self.dropped += len(judged.datagrams)

    def _forget(self, judged: _Judged) -> None:
        del self._judging[judged.client]
        self.deadlines.discard(judged)

    def _open(self, client: Address) -> Optional[Session]:
        if len(self.sessions) >= self.max_sessions:
            return None
        group = self.groups[self.upstream]
        backend = group.pick(StreamInfo(client[0]))
        if backend is None:
            return None
        session = Session(self, client, group, backend, self.clock.seconds())
        session.port = _session_socket(self.reactor, _SessionSocket(session), backend.host,
                                       backend.port)
        backend.in_flight += 1
        backend.requests += 1
        group.in_flight += 1
        self.sessions[client] = session
        self.deadlines.add(session)
        return session

    def end(self, session: Session, reason: str) -> None:
        """
        End C{session}: close its socket, release its backend, log it.
        """
        if self.sessions.get(session.client) is not session:
            return
        del self.sessions[session.client]
        self.deadlines.discard(session)
        session.reason = reason
        session.port.stopListening()
        backend, group = session.backend, session.group
        backend.in_flight -= 1
        ok = reason != "upstream_refused"
        if not ok:
            backend.failures += 1
        group.in_flight -= 1
        group.report(backend, ok, 0)
        if session.filters is not None:
            session.filters.connection_lost(session.client_address)
        if self._on_end is not None:
            self._on_end(session)

    def configure(self, config, forwarder) -> None:
        """
        New sessions use a reloaded configuration.
        """
        self.groups = forwarder.groups
        self.timeouts = config.timeouts

    def drain(self):
        """
        At shutdown: every session ends now (UDP has nothing to finish).
        """
        self.abort_all()
        return succeed(None)

    def abort_all(self) -> None:
        for session in list(self.sessions.values()):
            self.end(session, "shutdown")


_SEPARATOR = re.compile(r"(?<!\\):")


class UDPEndpoint:
    """
    Listens for datagrams as an endpoint string says (C{udp:PORT} with an
    optional C{interface=ADDRESS}); C{listen} has the shape of
    L{IStreamServerEndpoint.listen}, so that listeners start alike.
    """

    def __init__(self, reactor, description: str):
        parts = [p.replace("\\:", ":") for p in _SEPARATOR.split(description)]
        if parts[0] != "udp" or len(parts) < 2 or not parts[1].isdigit():
            raise ValueError("a udp listener's endpoint is udp:PORT[:interface=ADDRESS]")
        self.port = int(parts[1])
        if self.port > 65535:
            raise ValueError(f"port {self.port} is above 65535")
        self.interface = ""
        for option in parts[2:]:
            key, _, value = option.partition("=")
            if key != "interface" or not value:
                raise ValueError(f"unknown option {option!r} (only interface=ADDRESS)")
            self.interface = value
        self.reactor = reactor

    def listen(self, protocol: DatagramProtocol):
        try:
            return succeed(self.reactor.listenUDP(self.port, protocol, interface=self.interface,
                                                  maxPacketSize=MAX_DATAGRAM))
        except Exception:
            return fail()
