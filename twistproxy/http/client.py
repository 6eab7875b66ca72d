# -*- test-case-name: tests.test_proxy -*-
"""
The upstream codec: HTTP/1.1 spoken to backends, over pooled connections.

Opening a connection per request is what makes naive proxies slow (three to
nine times slower in our measurements), so each backend has an
L{UpstreamPool} of persistent connections.  A connection goes back to the
pool only when it is certain to be in a clean state: the request was sent
whole, the response was read to its end, nothing extra arrived, and the
backend did not ask to close.

Two races are handled:

  - the stale pooled connection: a backend may close an idle connection
    just as the proxy sends a request on it.  When a reused connection dies
    before any byte of the response, an idempotent request without a body
    is sent once more on a fresh connection;

  - the slow client: L{UpstreamProtocol.pause_reading} stops reading from
    the backend while the client cannot take more, so a large response
    never piles up in the proxy's memory.

A response with a transfer coding other than C{chunked} (C{gzip, chunked},
or C{gzip} until the backend closes) is decoded here, a bounded piece at a
time and only while the client takes the pieces, and passed on as its
content: the client and the cache never see the coding.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from twisted.internet import error
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger

from twistproxy import proxyproto
from twistproxy.config import Timeouts
from twistproxy.deadlines import Deadlines, Wait, Waiting
from twistproxy.flow import FullRelay, large_reads, no_delay, quick_ack, write_now
from twistproxy.http.exchange import Exchange
from twistproxy.http.parser import (
    ChunkedDecoder,
    CodingDecoder,
    ParseError,
    parse_response_head,
    response_has_body,
)
from twistproxy.net import authority, ip_port
from twistproxy.tls import tls_failure
from twistproxy.upstream.backend import Backend

# The waits of this codec, bound once: a member looked up on the enum
# class costs several times a global's lookup on CPython.
_W_NONE, _W_IDLE, _W_RESPONSE = Wait.NONE, Wait.IDLE, Wait.RESPONSE

MAX_RESPONSE_HEAD = 131072

# Connection states.
_IDLE, _HEAD, _BODY, _TUNNEL, _CLOSED = range(5)
# Response body framing; _CODED: with codings to undo, chunked (when there
# is a chunk decoder) or until the backend closes.
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _CODED = range(4)


class UpstreamProtocol(Waiting, Protocol):
    """
    One connection to a backend, carrying one exchange at a time.
    """

    log = Logger()

    def __init__(self, pool: UpstreamPool, first: Optional[Exchange] = None):
        self._pool = pool
        self._first = first
        self._clock = pool.reactor
        self._timeouts = pool.timeouts
        # The upstream_response timeout of the exchange under way.
        self._wait = self._timeouts.upstream_response
        self.exchange: Optional[Exchange] = None
        self._state = _IDLE
        self._buffer = b""
        self._framing = _LENGTH
        self._remaining = 0
        self._decoder: Optional[ChunkedDecoder] = None
        self._coding: Optional[CodingDecoder] = None
        self._resp = None
        self._request_done = False
        self._received = False
        self._paused = False
        self._backend_is_full = False
        self.uses = 0
        # The client connection a PROXY protocol connection speaks for.
        self.owner = None

    # Driven by the pool and the downstream side

    def attach(self, exchange: Exchange) -> None:
        """
        Send C{exchange}'s request on this connection.
        """
        self.exchange = exchange
        exchange.upstream = self
        now = exchange.upstream_started = self._clock.seconds()
        rt = exchange.route
        self._wait = (self._timeouts.upstream_response
                      if rt is None or rt.response_timeout is None else rt.response_timeout)
        self.uses += 1
        self._state = _HEAD
        self._received = False
        self._resp = None
        req = exchange.request
        # RequestHead.has_body, read without the property's call.
        self._request_done = not (req.chunked or req.content_length)
        write_now(self.transport, exchange.head)
        # The waits set in place (Waiting._set_timer's two assignments), with
        # the clock read above: attach runs for every request.
        if self._request_done:
            self._timer_kind = _W_RESPONSE
            self.deadline = now + self._wait
        else:
            self._set_timer(_W_NONE, 0)
        exchange.downstream.upstream_attached(exchange)
        if self._backend_is_full and self.exchange is exchange:
            exchange.downstream.upstream_full(True)

    def write_body(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange.request.chunked:
            write_now(self.transport, b"%x\r\n%s\r\n" % (len(data), data))
        else:
            write_now(self.transport, data)
        if exchange.body_copy is not None:
            exchange.body_copy.write(data)

    def end_body(self) -> None:
        exchange = self.exchange
        if exchange.request.chunked:
            write_now(self.transport, b"0\r\n\r\n")
        self._request_done = True
        if self._state == _HEAD:
            self._set_timer(_W_RESPONSE, self._wait)
        if exchange.body_copy is not None:
            copy, exchange.body_copy = exchange.body_copy, None
            copy.end(exchange)

    def pause_reading(self, pause: bool) -> None:
        """
        Stop (or restart) reading from the backend while the client is slow.
        """
        if pause == self._paused or self._state == _CLOSED:
            return
        self._paused = pause
        if pause:
            self.transport.pauseProducing()
            if self._timer_kind == _W_RESPONSE:
                # The backend is not the one being slow.
                self._set_timer(_W_NONE, 0)
        else:
            self.transport.resumeProducing()
            if self._state in (_HEAD, _BODY) and self._request_done:
                self._set_timer(_W_RESPONSE, self._wait)
            exchange = self.exchange
            if self._state == _BODY and self._framing == _CODED:
                # What was read before the pause may still hold content.
                self._read_coded(exchange)
                if self.exchange is exchange:
                    exchange.sink.flush()

    def abort(self) -> None:
        """
        The client went away, or the request failed: drop this connection.
        """
        self.exchange = None
        if self._state != _CLOSED:
            self._state = _CLOSED
            self.transport.abortConnection()

    # Connection events

    def connectionMade(self) -> None:
        self.transport.registerProducer(FullRelay(self._backend_full), True)
        no_delay(self.transport)
        large_reads(self.transport)
        self._pool.deadlines.add(self)
        exchange, self._first = self._first, None
        if self._pool.proxy_protocol:
            downstream = exchange.downstream if exchange is not None else None
            self.owner = downstream.connection if downstream else None
            if self._pool.tls is None:
                # Over TLS it went first, in the clear (see _connect).
                self.transport.write(self._pool.proxy_header(exchange))
        self._pool.connection_made(self, exchange)

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == _TUNNEL:
            self.exchange.downstream.tunnel_data(data)
            return
        if state == _IDLE or state == _CLOSED:
            # Nothing is expected from an idle backend connection.
            if state == _IDLE:
                self._state = _CLOSED
                self.transport.loseConnection()
            return
        self._received = True
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data
        # While the state is _HEAD or _BODY there is an exchange.
        exchange = self.exchange
        # A response head (after any 1xx ones), then what there is of its
        # body.  _read_head returns False, stopping, for an incomplete
        # head, a failure or a protocol switch: none leaves _BODY.
        while self._state == _HEAD and self._read_head():
            pass
        if self._state == _BODY:
            if self._framing != _LENGTH:
                self._read_body()
            else:
                # A body of known length, the usual one, read here rather
                # than in one more call per response (for the exchange the
                # read began with: only _finish hands the connection on).
                buf = self._buffer
                n = self._remaining
                extra = len(buf) - n
                if extra > 0:
                    # More than the body: the connection is not reused.
                    self._buffer = buf[n:]
                    buf = buf[:n]
                    self._remaining = 0
                else:
                    self._buffer = b""
                    self._remaining = -extra
                if buf:
                    exchange.sink.response_body(exchange, buf)
                if not self._remaining:
                    self._finish(exchange)
        if self.exchange is exchange:
            exchange.sink.flush()
        if self.exchange is not None and self._state != _TUNNEL:
            # More of this response is to come: its wait starts again,
            # renewed only now that the response did not end with this
            # read (which sets the idle wait).
            if self._timer_kind == _W_RESPONSE:
                self._set_timer(_W_RESPONSE, self._wait)
            quick_ack(self.transport)

    def connectionLost(self, reason=None) -> None:
        previous = self._state
        self._state = _CLOSED
        self._set_timer(_W_NONE, 0)
        self._pool.deadlines.discard(self)
        self._pool.connection_lost(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        if previous == _TUNNEL:
            exchange.downstream.transport.loseConnection()
            return
        if previous == _BODY and (self._framing == _UNTIL_CLOSE or (
                self._framing == _CODED and self._decoder is None
                and self._coding.complete)):
            self._finish(exchange)
            return
        if previous == _BODY:
            _failed(exchange, 502, "upstream_truncated")
            return
        failure = tls_failure(reason) if reason is not None else None
        if failure is not None:
            # A handshake or verification failure (a certificate for
            # another name included): never retried without TLS.
            self.log.warn(
                "TLS with backend {backend} failed: {error} (upstream_tls_failed)",
                backend=self._pool.backend.name, error=failure,
            )
            _failed(exchange, 502, "upstream_tls_failed")
            return
        if not self._received and self.uses > 1:
            # A reused connection that died before answering: most likely
            # the backend closed it while idle just as the request left.
            _failed(exchange, 502, "upstream_stale")
            return
        _failed(exchange, 502, "upstream_closed")

    # Response parsing

    def _fail(self, status: int, reason: str) -> None:
        exchange = self.exchange
        self.abort()
        _failed(exchange, status, reason)

    def _read_head(self) -> bool:
        buf = self._buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_RESPONSE_HEAD:
                self._fail(502, "upstream_head_too_large")
            return False
        try:
            resp = parse_response_head(buf[:end])
        except ParseError as e:
            self._fail(502, "upstream_" + e.reason)
            return False
        self._buffer = buf[end + 4:]
        exchange = self.exchange
        status = resp.status
        if status < 200:
            if status == 101:
                return self._switch(resp)
            if status != 100:
                # 100 Continue was already answered by the proxy itself.
                exchange.sink.informational(exchange, resp)
            return True
        method = exchange.request.method
        if status == 200 and method == b"GET":
            # Most responses: they have a body by every rule of
            # response_has_body, and need no call to say so.
            has_body = True
        else:
            has_body = response_has_body(status, method)
        if not has_body:
            self._remaining = 0
            self._framing = _LENGTH
        elif resp.codings:
            self._framing = _CODED
            self._decoder = ChunkedDecoder(status=502) if resp.chunked else None
            self._coding = CodingDecoder(resp.codings)
        elif resp.chunked:
            self._framing = _CHUNKED
            self._decoder = ChunkedDecoder(status=502)
        elif resp.content_length is not None:
            self._framing = _LENGTH
            self._remaining = resp.content_length
        else:
            self._framing = _UNTIL_CLOSE
        self._resp = resp
        self._state = _BODY
        exchange.sink.response_head(exchange, resp, has_body)
        return True

    def _read_body(self) -> None:
        """
        Read what arrived of a body that is chunked, coded or delimited by
        the backend closing (dataReceived reads one of known length).
        """
        exchange = self.exchange
        buf = self._buffer
        sink = exchange.sink
        framing = self._framing
        if framing == _CHUNKED:
            if not buf:
                return
            try:
                pieces, rest = self._decoder.feed(buf)
            except ParseError as e:
                self._fail(502, "upstream_" + e.reason)
                return
            self._buffer = rest or b""
            for piece in pieces:
                sink.response_body(exchange, piece)
                if self.exchange is not exchange:
                    return
            if rest is not None:
                self._finish(exchange)
        elif framing == _CODED:
            self._read_coded(exchange)
        else:
            self._buffer = b""
            if buf:
                sink.response_body(exchange, buf)

    def _read_coded(self, exchange: Exchange) -> None:
        """
        Decode what arrived of a coded body, and pass the content on while
        the client takes it.
        """
        buf, self._buffer = self._buffer, b""
        chunks = self._decoder
        coding = self._coding
        try:
            if chunks is None:
                coding.feed(buf)
            elif buf:
                pieces, rest = chunks.feed(buf)
                self._buffer = rest or b""
                for piece in pieces:
                    coding.feed(piece)
            sink = exchange.sink
            while True:
                if self._paused:
                    # Resumed by pause_reading.
                    return
                data = coding.read()
                if data is None:
                    break
                sink.response_body(exchange, data)
                if self.exchange is not exchange:
                    return
                # Written now, so that a slow client pauses the decoding.
                sink.flush()
                if self.exchange is not exchange:
                    return
            if chunks is not None and chunks.done:
                if not coding.complete:
                    raise ParseError(502, "bad_coding")
                # Its zlib states are not kept on a pooled connection.
                self._coding = None
                self._finish(exchange)
        except ParseError as e:
            self._fail(502, "upstream_" + e.reason)

    def _finish(self, exchange: Exchange) -> None:
        """
        The response has been read to its end.
        """
        now = exchange.upstream_ended = self._clock.seconds()
        self.exchange = None
        if exchange.upstream is self:
            exchange.upstream = None
        reusable = (
            self._state == _BODY
            and self._request_done
            and self._resp.keep_alive
            and self._framing != _UNTIL_CLOSE
            and not self._buffer
        )
        if reusable:
            self._state = _IDLE
            self._pool.release(self, now)
        elif self._state != _CLOSED:
            self._state = _CLOSED
            self.transport.loseConnection()
        exchange.sink.response_end(exchange)

    def _switch(self, resp) -> bool:
        exchange = self.exchange
        if exchange.request.upgrade is None:
            self._fail(502, "upstream_unexpected_switch")
            return False
        upgrade = None
        for name, value in resp.headers:
            if name.lower() == b"upgrade":
                upgrade = value
        if upgrade is None:
            self._fail(502, "upstream_bad_switch")
            return False
        self._state = _TUNNEL
        self._set_timer(_W_NONE, 0)
        self._request_done = True
        exchange.upstream_ended = self._clock.seconds()
        # Through the response filters, as any final response head: they
        # hide the backend's banners from a WebSocket handshake too.
        exchange.sink.response_head(
            exchange, resp, False, extra=[(b"Connection", b"upgrade"), (b"Upgrade", upgrade)]
        )
        exchange.downstream.tunnel(exchange)
        if self._buffer:
            data, self._buffer = self._buffer, b""
            exchange.downstream.tunnel_data(data)
        return False

    # Internals

    def _backend_full(self, full: bool) -> None:
        self._backend_is_full = full
        exchange = self.exchange
        if exchange is not None:
            exchange.downstream.upstream_full(full)

    def idle(self, now: Optional[float] = None) -> None:
        """
        The connection was put back in the pool, at C{now} if the caller
        has just read the clock.
        """
        if self._paused:
            self.pause_reading(False)
        self._set_timer(_W_IDLE, self._timeouts.upstream_idle, now)

    def _wait_expired(self, kind: Wait) -> None:
        if self._state == _CLOSED:
            return
        if kind == _W_RESPONSE and self.exchange is not None:
            self._fail(504, "upstream_timeout")
        elif kind == _W_IDLE and self._state == _IDLE:
            self._state = _CLOSED
            self.transport.loseConnection()


def _failed(exchange: Exchange, status: int, reason: str) -> None:
    # The forwarder decides: another attempt, or the error answer.
    exchange.forwarder.failed(exchange, status, reason)


class _Connector(ClientFactory):
    """
    Opens one connection to a backend for a pool.
    """

    noisy = False

    def __init__(self, pool: UpstreamPool, exchange: Optional[Exchange]):
        self.pool = pool
        self.exchange = exchange

    def buildProtocol(self, addr):
        return UpstreamProtocol(self.pool, self.exchange)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.pool.connect_failed(self.exchange, reason)


class UpstreamPool:
    """
    Persistent connections to one backend.

    @ivar connections: Connections open or being opened.
    @ivar reactor: Provides C{connectTCP} and the clock.
    @ivar host: The backend's authority as its URL names it (the default
        port left out), which requests carry as C{Host} when their route
        does not keep the client's.
    """

    def __init__(
        self,
        reactor,
        backend: Backend,
        timeouts: Timeouts = Timeouts(),
        max_connections: int = 256,
        max_idle: int = 256,
        max_pending: int = 256,
        tls=None,
        proxy_protocol: str = "",
    ):
        self.reactor = reactor
        # "v1" or "v2": each connection opens with a PROXY header naming one
        # client connection, and carries only that connection's requests.
        self.proxy_protocol = proxy_protocol
        self.backend = backend
        self.host = authority(backend.host, backend.port, backend.scheme).encode("ascii")
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.max_pending = max_pending
        # An IOpenSSLClientConnectionCreator for https backends, or None.
        self.tls = tls
        self.connections = 0
        self.deadlines = Deadlines(reactor)
        self._idle: list = []
        self._waiting: deque = deque()

    def submit(self, exchange: Exchange, fresh: bool = False) -> None:
        """
        Send C{exchange} on an idle connection, a new one, or as soon as one is
        free.

        @param fresh: Do not use an idle connection (a retry).
        """
        exchange.pool = self
        if not fresh and self._idle:
            protocol = self._own_idle(exchange) if self.proxy_protocol else self._idle.pop()
            if protocol is not None:
                protocol.attach(exchange)
                return
        if self.connections < self.max_connections:
            self._connect(exchange)
        elif len(self._waiting) >= self.max_pending:
            # Circuit breaking: fail fast rather than queue without end.
            _failed(exchange, 503, "upstream_queue_full")
        else:
            self._waiting.append(exchange)
            exchange.wait_timer = self.reactor.callLater(
                self.timeouts.connect, self._wait_expired, exchange
            )

    def cancel(self, exchange: Exchange) -> None:
        """
        The client of C{exchange} went away or its request failed: forget it.
        """
        upstream = exchange.upstream
        if upstream is not None:
            exchange.upstream = None
            upstream.abort()
        if exchange.wait_timer is not None:
            self._drop_waiter(exchange)

    def release(self, protocol: UpstreamProtocol, now: Optional[float] = None) -> None:
        """
        A connection finished its exchange cleanly (at C{now}, if the
        caller has just read the clock).
        """
        if self._waiting:
            if self.proxy_protocol:
                # It speaks for another client: close it, and connection_lost
                # opens one for the next waiter.
                protocol.abort()
            else:
                protocol.attach(self._next_waiter())
        elif len(self._idle) < self.max_idle:
            protocol.idle(now)
            self._idle.append(protocol)
        else:
            protocol.abort()

    def connection_made(self, protocol: UpstreamProtocol, exchange: Optional[Exchange]) -> None:
        if (exchange is not None and exchange.pool is self and exchange.downstream is not None
                and exchange.status == 0):
            protocol.attach(exchange)
        else:
            self.release(protocol)

    def connection_lost(self, protocol: UpstreamProtocol) -> None:
        self.connections -= 1
        if protocol in self._idle:
            self._idle.remove(protocol)
        if self._waiting and self.connections < self.max_connections:
            self._connect(self._next_waiter())

    def connect_failed(self, exchange: Optional[Exchange], reason) -> None:
        self.connections -= 1
        if exchange is None or exchange.pool is not self or exchange.status:
            return
        if reason.check(error.TimeoutError):
            _failed(exchange, 504, "upstream_connect_timeout")
        else:
            _failed(exchange, 502, "upstream_connect_failed")

    def close(self) -> None:
        """
        Close every idle connection (at shutdown).
        """
        for protocol in list(self._idle):
            protocol.abort()

    def _connect(self, exchange: Exchange) -> None:
        self.connections += 1
        backend = self.backend
        if self.tls is not None and self.proxy_protocol:
            self.reactor.connectTCP(
                backend.host, backend.port,
                proxyproto.HeaderThenTLSFactory(
                    self.reactor, self.tls, _Connector(self, exchange), self.proxy_header(exchange)),
                timeout=self.timeouts.connect,
            )
        elif self.tls is not None:
            self.reactor.connectSSL(
                backend.host, backend.port, _Connector(self, exchange), self.tls,
                timeout=self.timeouts.connect,
            )
        else:
            self.reactor.connectTCP(
                backend.host, backend.port, _Connector(self, exchange),
                timeout=self.timeouts.connect,
            )

    def _own_idle(self, exchange: Exchange) -> Optional[UpstreamProtocol]:
        """
        An idle connection opened for the client connection of C{exchange}.
        """
        owner = exchange.downstream.connection
        idle = self._idle
        for i in range(len(idle) - 1, -1, -1):
            if idle[i].owner is owner:
                return idle.pop(i)
        return None

    def proxy_header(self, exchange: Optional[Exchange]) -> bytes:
        """
        The PROXY header of a new connection for C{exchange}'s client connection.
        """
        if exchange is None or exchange.downstream is None:
            return proxyproto.encode(self.proxy_protocol, None, None)
        transport = exchange.downstream.connection.transport
        server_name = proxyproto.tls_server_name(transport)
        return proxyproto.encode(
            self.proxy_protocol, ip_port(transport.getPeer()),
            ip_port(transport.getHost()), server_name or "",
            tls=server_name is not None)

    def _next_waiter(self) -> Exchange:
        exchange = self._waiting.popleft()
        timer, exchange.wait_timer = exchange.wait_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return exchange

    def _drop_waiter(self, exchange: Exchange) -> None:
        timer = exchange.wait_timer
        exchange.wait_timer = None
        if timer is not None and timer.active():
            timer.cancel()
        try:
            self._waiting.remove(exchange)
        except ValueError:
            pass

    def _wait_expired(self, exchange: Exchange) -> None:
        exchange.wait_timer = None
        try:
            self._waiting.remove(exchange)
        except ValueError:
            return
        _failed(exchange, 503, "upstream_queue_timeout")

