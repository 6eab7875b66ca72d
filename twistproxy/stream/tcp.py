# -*- test-case-name: tests.test_stream_tcp -*-
"""
TCP proxying: each accepted connection relayed byte for byte to a backend.

A C{protocol = "tcp"} listener knows nothing of what its connections
carry (a database protocol, SMTP, MQTT, TLS it does not terminate).  For
each client connection a L{TCPRelay} asks the listener's upstream group for
a backend, exactly as an HTTP request would (any balancer; the consistent
hashing ones key on the client's address, as no other key exists), opens a
connection to it and copies bytes both ways until both sides are done:

  - I{Connect.}  A connection that fails or times out (C{timeouts.connect})
    is tried on another backend, each at most once; after a refused
    connection, or a failure of a backend already known bad, at no cost,
    and after other failures up to the group's C{retries} (as for HTTP
    requests: L{UpstreamGroupRuntime.counted_retry
    <twistproxy.upstream.group.UpstreamGroupRuntime.counted_retry>}).  The
    failure counts against the backend for outlier detection.  Bytes the
    client sends meanwhile wait in the kernel: the client is not read until
    the backend is connected.

  - I{Backpressure.}  Each side's transport has a L{FullRelay} registered:
    when one side's write buffer fills up, the other side stops being read
    until it drains, so a slow reader slows the writer down instead of
    growing the proxy's memory.

  - I{Half-close.}  When one side ends its sending half (a FIN), the proxy
    ends its sending half towards the other side once what is buffered has
    gone, and keeps relaying the other direction; the connection is closed
    when both directions have ended, or either side closes or resets.

  - I{Idle timeout.}  No byte either way for C{timeouts.tcp_idle} seconds
    cuts both connections (the shared coarse timer of
    L{twistproxy.deadlines}): what is still buffered for a side that
    stopped reading is dropped, as waiting for it to drain would keep both
    connections (and their sockets) forever.

  - I{Logging.}  When both connections are closed, one access log line
    gives the client, the backend, the bytes each way, the duration and,
    when the proxy ended it, why.

The client's address is known in C{connectionMade} (behind a trusted
PROXY header, the address it gives), before any backend is picked: that is
where the listener's connection filters (access rules, rate limits,
connection limits: L{twistproxy.filters}) judge it.  A refused connection
is closed without a backend connection and logged with the refusing
filter's status and reason (403 C{access_denied}, 429 C{rate_limited}, 503
C{connection_limit}).  A filter may take its time (a rate limit counted in
Redis): the client is not read meanwhile, and after C{timeouts.connect}
seconds without a verdict the connection is closed (503
C{filter_timeout}).

A listener's C{max_connections} caps the connections relayed at once (a
connection above it is closed at accept, and logged with 503
C{max_connections}); every relayed connection also counts against the
process's C{limits.max_connections}, whose fullness pauses accepting
(L{twistproxy.admission}).  Every connection closed without being relayed
(at a limit, by a filter, for want of a backend or, with TLS passthrough,
of a route or a valid ClientHello) has its access log line, as a relayed
one does.

A backend group configured with C{proxy_protocol} gets a PROXY header
(L{twistproxy.proxyproto}) before the client's first byte.
"""

from __future__ import annotations

from typing import Callable, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer

from twistproxy.admission import Emptied, Quota
from twistproxy.config import Timeouts
from twistproxy.deadlines import NEVER, Deadlines
from twistproxy.flow import FullRelay, no_delay, write_now
from twistproxy.interfaces import IRequestInfo
from twistproxy import proxyproto
from twistproxy.net import ip_port
from twistproxy.upstream.backend import Backend


@implementer(IRequestInfo)
class StreamInfo:
    """
    What a balancer knows of a relayed connection: the client's address
    and, for TLS passthrough, the server name asked for (as C{host}).
    """

    __slots__ = ("client_address", "host")
    method = ""
    path = ""

    def __init__(self, client_address: str, host: str = ""):
        self.client_address = client_address
        self.host = host

    def header(self, name: str) -> Optional[str]:
        return None

    def cookie(self, name: str) -> Optional[str]:
        return None


# nginx stream's status for the reasons that are not 200 (those that HTTP
# has too with HTTP's).
_STATUS = {
    "no_backend": 503,
    "filter_timeout": 503,
    "max_connections": 503,
    "upstream_connect_failed": 502,
    "upstream_connect_timeout": 502,
    "bad_client_hello": 400,
    "client_hello_timeout": 408,
    "no_route": 404,
}


@implementer(IHalfCloseableProtocol)
class _Upstream(Protocol):
    """
    The proxy's connection to the backend of one relay.
    """

    def __init__(self, relay: "TCPRelay"):
        self.relay = relay

    def connectionMade(self) -> None:
        self.relay._upstream_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.relay._from_upstream(data)

    def readConnectionLost(self) -> None:
        self.relay._upstream_read_ended()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self.relay._upstream_lost()


class _Connector(ClientFactory):
    noisy = False

    def __init__(self, relay: "TCPRelay"):
        self.relay = relay

    def buildProtocol(self, addr):
        return _Upstream(self.relay)

    def clientConnectionFailed(self, connector, reason) -> None:
        from twisted.internet.error import TimeoutError

        self.relay._connect_failed(
            "upstream_connect_timeout" if reason.check(TimeoutError)
            else "upstream_connect_failed")


@implementer(IHalfCloseableProtocol)
class TCPRelay(Protocol):
    """
    One client connection and its connection to a backend.

    @ivar client_address: The client's IP address (C{''} when not IP).
    @ivar server_name: The TLS server name it asked for (passthrough), or
        C{''}.
    @ivar group: The upstream group.
    @ivar backend: The backend connected (or being connected) to.
    @ivar bytes_received: Bytes read from the client.
    @ivar bytes_sent: Bytes written to the client.
    @ivar started: When the client connected, in reactor seconds.
    @ivar reason: Why the proxy ended the relay, or C{''}.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>} that accepted this connection (and
        is told when it ends), or C{None}.
    @ivar quota_held: Whether the connection holds a place in the
        factory's connection quota.
    """

    filters = None
    quota_held = False
    _refused_status = 0

    protocol = "TCP"

    def __init__(self, factory: "TCPRelayFactory", group_name: str, server_name: str = "",
                 initial: bytes = b"", refusal: str = ""):
        """
        @param refusal: The reason to close the connection for as soon as
            it is made, or C{''} to relay it.
        """
        self.factory = factory
        self._refusal = refusal
        self.group_name = group_name
        self.server_name = server_name
        self._pending = initial
        self.client_address = ""
        self.group = None
        self.backend: Optional[Backend] = None
        self.upstream: Optional[_Upstream] = None
        self.bytes_received = len(initial)
        self.bytes_sent = 0
        self.started = 0.0
        self.reason = ""
        self.deadline = NEVER
        self._tried: List[Backend] = []
        # Of those, the failures that count against the group's retries.
        self._counted = 0
        self._info: Optional[StreamInfo] = None
        self._client_open = True
        self._upstream_open = False
        self._admitted = False
        self._client_eof = False
        self._upstream_eof = False
        self._done = False
        self._judging = False
        # The transports on which a FullRelay is registered.
        self._held: List = []

    # The client side

    def connectionMade(self) -> None:
        factory = self.factory
        self.started = factory.clock.seconds()
        peer = self.transport.getPeer()
        self.client_address = getattr(peer, "host", "") or ""
        if self._refusal:
            self._end(self._refusal)
            return
        factory.connections.add(self)
        # Not read until the backend is connected: what the client sends
        # meanwhile waits in the kernel's buffers.
        self.transport.pauseProducing()
        no_delay(self.transport)
        self._hold(self.transport, self._client_full)
        chain = factory.filters
        if chain is not None:
            verdict = chain.admit(self.client_address)
            if isinstance(verdict, Deferred):
                self._judging = True
                self.deadline = self.started + factory.timeouts.connect
                factory.deadlines.add(self)
                verdict.addCallback(self._judged, chain)
                return
            if verdict is not None:
                self._refuse(verdict)
                return
            self.filters = chain
        self._start()

    def _judged(self, verdict, chain) -> None:
        if not self._judging:
            # Closed (or timed out) meanwhile: only the filters that
            # accepted it have to know it is over.
            if verdict is None:
                chain.connection_lost(self.client_address)
            return
        self._judging = False
        self.factory.deadlines.discard(self)
        if verdict is not None:
            self._refuse(verdict)
            return
        self.filters = chain
        self._start()

    def _refuse(self, answer) -> None:
        self._refused_status = answer.status
        self._end(answer.reason)

    def _start(self) -> None:
        factory = self.factory
        group = self.group = factory.groups[self.group_name]
        self._info = StreamInfo(self.client_address, self.server_name)
        backend = group.pick(self._info)
        if backend is None:
            self._end("no_backend")
            return
        group.in_flight += 1
        self._admitted = True
        self._connect(backend)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.upstream is None:
            # Handed over by a protocol that read ahead (a PROXY header
            # reader) before the backend is connected.
            self._pending += data
            return
        self.deadline = self.factory.clock.seconds() + self.factory.timeouts.tcp_idle
        write_now(self.upstream.transport, data)

    def readConnectionLost(self) -> None:
        self._client_eof = True
        if self.upstream is not None:
            self._release(self.upstream.transport).loseWriteConnection()
            self._maybe_done()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        self._client_open = False
        self._judging = False
        if self.upstream is None and self.backend is not None:
            # Still connecting: _upstream_made or _connect_failed finishes.
            return
        if self._upstream_open:
            self._release(self.upstream.transport).loseConnection()
        self._finish()

    def _client_full(self, full: bool) -> None:
        upstream = self.upstream
        if upstream is not None:
            if full:
                upstream.transport.pauseProducing()
            else:
                upstream.transport.resumeProducing()

    # The backend side

    def _connect(self, backend: Backend) -> None:
        self.backend = backend
        backend.in_flight += 1
        backend.requests += 1
        self.factory.connect(backend, _Connector(self))

    def _connect_failed(self, reason: str) -> None:
        backend = self.backend
        self._release_backend(ok=False)
        if not self._client_open:
            self._finish()
            return
        self._tried.append(backend)
        group = self.group
        retries = group.config.retries
        counted = group.counted_retry(reason, backend)
        if retries and (not counted or self._counted < retries):
            other = group.pick_other(self._info, self._tried)
            if other is not None:
                self._counted += counted
                self._connect(other)
                return
        self._end(reason)

    def _upstream_made(self, upstream: _Upstream) -> None:
        if not self._client_open:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        self._upstream_open = True
        transport = upstream.transport
        no_delay(transport)
        self._hold(transport, self._upstream_full)
        version = self.group.config.proxy_protocol
        head = b""
        if version:
            # The client's TLS is this proxy's on an ssl: endpoint.
            terminated = proxyproto.tls_server_name(self.transport)
            head = proxyproto.encode(
                version, ip_port(self.transport.getPeer()),
                ip_port(self.transport.getHost()),
                self.server_name or terminated or "", tls=terminated is not None)
        if head or self._pending:
            write_now(transport, head + self._pending)
            self._pending = b""
        self.deadline = self.factory.clock.seconds() + self.factory.timeouts.tcp_idle
        self.factory.deadlines.add(self)
        if self._client_eof:
            self._release(transport).loseWriteConnection()
        else:
            self.transport.resumeProducing()

    def _from_upstream(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.deadline = self.factory.clock.seconds() + self.factory.timeouts.tcp_idle
        write_now(self.transport, data)

    def _upstream_full(self, full: bool) -> None:
        if full:
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def _upstream_read_ended(self) -> None:
        self._upstream_eof = True
        if self._client_open:
            self._release(self.transport).loseWriteConnection()
        self._maybe_done()

    def _upstream_lost(self) -> None:
        self._upstream_open = False
        if self._client_open:
            self._release(self.transport).loseConnection()
        self._release_backend(ok=True)
        self._finish()

    def _maybe_done(self) -> None:
        if self._client_eof and self._upstream_eof:
            self._release(self.transport).loseConnection()
            self._release(self.upstream.transport).loseConnection()

    def _hold(self, transport, on_full: Callable[[bool], None]) -> None:
        transport.registerProducer(FullRelay(on_full), True)
        self._held.append(transport)

    def _release(self, transport):
        """
        Unregister the L{FullRelay} from C{transport}, to which nothing
        more will be written, before its connection (or sending half) is
        closed: a transport whose registered producer was paused when its
        buffer filled resumes the producer once the buffer drains, instead
        of closing (C{FileDescriptor.doWrite}), and would never close.

        @return: C{transport}.
        """
        if transport in self._held:
            self._held.remove(transport)
            transport.unregisterProducer()
        return transport

    # Ending

    def expired(self) -> None:
        if self._judging:
            self._judging = False
            self._end("filter_timeout")
            return
        # Nothing moved for tcp_idle seconds: a side that stopped reading
        # will not take what is buffered for it, and a graceful close
        # would wait for that (keeping the other side's socket in
        # CLOSE-WAIT once its peer has gone).
        self.abort("idle_timeout")

    def abort(self, reason: str = "shutdown") -> None:
        """
        Cut both connections now.
        """
        self.reason = self.reason or reason
        if self.upstream is not None:
            self.upstream.transport.abortConnection()
        if self._client_open:
            self.transport.abortConnection()

    def _end(self, reason: str) -> None:
        # Before any backend connection is made: nothing is buffered.
        self.reason = reason
        if self._client_open:
            self.transport.loseConnection()
        else:
            self._finish()

    def _release_backend(self, ok: bool) -> None:
        backend = self.backend
        if backend is None:
            return
        self.backend = None
        backend.in_flight -= 1
        if not ok:
            backend.failures += 1
        self.group.report(backend, ok, 0)
        self.group.check_drained(backend)
        self._last_backend = backend

    _last_backend: Optional[Backend] = None

    def _finish(self) -> None:
        # Called when neither connection is open any more (or will be).
        if self._done or self._client_open or self._upstream_open:
            return
        self._done = True
        self.factory.deadlines.discard(self)
        if self.backend is not None:
            self._release_backend(ok=True)
        if self._admitted:
            self.group.in_flight -= 1
        if self.filters is not None:
            self.filters.connection_lost(self.client_address)
        self.backend = self._last_backend
        self.factory.relay_ended(self)

    @property
    def status(self) -> int:
        """
        nginx stream's C{$status}: 200; 502/503 when no backend could be
        reached; the refusing filter's (403, 429, 503) when a filter
        refused the connection.
        """
        return self._refused_status or _STATUS.get(self.reason, 200)


class TCPRelayFactory(Factory):
    """
    Builds the L{TCPRelay}s of one C{tcp} listener.

    @ivar groups: The upstream groups by name (swapped on reload).
    @ivar connections: The relays open now.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>} of connection filters, or C{None}.
    @ivar quota: The L{Quota <twistproxy.admission.Quota>} every relay
        counts against (the process's connections), or C{None}.
    @ivar rejected: Connections closed at once, at C{max_connections} or
        with the quota full (for the metrics).
    """

    noisy = False

    def __init__(self, reactor, listener: str, upstream: str, groups, timeouts: Timeouts,
                 max_connections: int = 0,
                 on_end: Optional[Callable[["TCPRelay"], None]] = None,
                 filters=None, quota: Optional[Quota] = None):
        self.reactor = self.clock = reactor
        self.listener = listener
        self.upstream = upstream
        self.groups = groups
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.filters = filters
        self.quota = quota
        self.deadlines = Deadlines(reactor)
        self.connections: set = set()
        self.rejected = 0
        self._on_end = on_end
        self._emptied = Emptied(self.connections)

    def buildProtocol(self, addr):
        return self.relay(self.upstream)

    def relay(self, group_name: str, server_name: str = "", initial: bytes = b""):
        """
        A relay to C{group_name}, or one that closes the connection at once
        (reason C{max_connections}) at C{max_connections} or when the quota
        is full.
        """
        quota = self.quota
        if ((self.max_connections and len(self.connections) >= self.max_connections)
                or (quota is not None and not quota.acquire())):
            self.rejected += 1
            return self.refuse("max_connections", server_name, initial)
        relay = TCPRelay(self, group_name, server_name, initial)
        relay.quota_held = quota is not None
        return relay

    def refuse(self, reason: str, server_name: str = "", initial: bytes = b"") -> TCPRelay:
        """
        A protocol that closes its connection as soon as it is made, and
        logs it as a relayed connection would be, with C{reason} (one of
        L{_STATUS}'s, which gives its status).

        @param initial: The bytes read from the connection so far.
        """
        return TCPRelay(self, "", server_name, initial, refusal=reason)

    def connect(self, backend: Backend, connector: ClientFactory) -> None:
        self.reactor.connectTCP(backend.host, backend.port, connector,
                                timeout=self.timeouts.connect)

    def configure(self, config, forwarder) -> None:
        """
        Relay new connections with a reloaded configuration.
        """
        self.groups = forwarder.groups
        self.timeouts = config.timeouts

    def relay_ended(self, relay: TCPRelay) -> None:
        self.connections.discard(relay)
        if relay.quota_held:
            relay.quota_held = False
            self.quota.release()
        if self._on_end is not None:
            self._on_end(relay)
        self._emptied.check()

    def drain(self):
        """
        Graceful shutdown: the relays open go on until they end.

        @return: A Deferred that fires when the last one has.
        """
        return self._emptied.wait()

    def abort_all(self) -> None:
        """
        Cut every relay now (the drain time is over).
        """
        for relay in list(self.connections):
            relay.abort()
