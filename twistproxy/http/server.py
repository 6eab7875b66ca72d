# -*- test-case-name: tests.test_proxy -*-
"""
The downstream codec: HTTP/1.1 spoken to clients.

L{HTTPServerProtocol} reads requests from one client connection, hands each
to the forwarder as an L{Exchange}, streams the request body to the upstream
connection the forwarder attaches, and writes the response back.  It knows
nothing of routes, balancers or pools: it calls C{forwarder.forward(x)} and
is called back by the upstream side through the C{response_*} and
C{upstream_*} methods.

Requests on one connection are handled one at a time: a pipelined request
waits, unparsed, in the input buffer until the response before it is
complete, so responses always leave in order.  Reading from the client is
paused whenever the input buffer holds more than L{BUFFER_LIMIT} bytes or the
upstream connection cannot take more, which bounds memory per connection
whatever the client sends.

Every wait has a timeout on the injected clock: the connection's
C{deadline}, checked by the factory's L{Deadlines} (a float assignment per
state change, rather than a timer per request).  The request head has one
deadline for the whole head, which bytes trickling in do not push back;
a client that stops reading what the proxy sends is cut off once its send
buffer has stayed full for C{timeouts.send}.

What the factory admits is bounded too (L{twistproxy.admission}): its
connections by a L{Quota} (beyond which it refuses them), requests in
flight by another (beyond which they are answered 503 at once), and the
requests served on one connection by C{limits.max_requests_per_connection}.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from twistproxy.admission import Emptied, Quota, Refused, quotas
from twistproxy.config import Limits, Timeouts
from twistproxy.deadlines import Deadlines, Waiting
from twistproxy.flow import FullRelay, no_delay, quick_ack, write_now
from twistproxy.http import headers as H
from twistproxy.interfaces import IResponseSink
from twistproxy.http.exchange import Exchange
from twistproxy.http.paths import KEEP
from twistproxy.http.parser import (
    UNPARSED,
    ChunkedDecoder,
    ParseError,
    host_name,
    parse_request_head,
    target_too_long,
)

BUFFER_LIMIT = 65536

# Connection states.
_HEAD, _BODY, _WAIT, _TUNNEL, _CLOSED = range(5)
# Why reading from the client is paused (a bit mask).
_PAUSE_BUFFER, _PAUSE_UPSTREAM, _PAUSE_CLIENT = 1, 2, 4
# What the connection timer is waiting for.
_T_NONE, _T_IDLE, _T_HEAD, _T_BODY, _T_TUNNEL = range(5)
# What an overloaded proxy tells clients: try again in a second.
RETRY_AFTER = (b"Retry-After", b"1")


class _SendStall:
    """
    A member of the factory's L{Deadlines} while a client's send buffer is
    full: a second wait beside the connection's own, which it may outlast
    (a response stuck behind a client that does not read).
    """

    __slots__ = ("deadline", "_codec")

    def __init__(self, codec: ClientCodec, deadline: float):
        self._codec = codec
        self.deadline = deadline

    def expired(self) -> None:
        self._codec._send_timed_out()


class ClientCodec(Waiting, Protocol):
    """
    What the HTTP/1.1 and HTTP/2 client-side codecs share: who the client
    is, whether it is a trusted proxy, its verified TLS identity, and
    pausing the backends while the client cannot take more.

    @ivar client_address: The peer's IP address (C{''} for a UNIX socket).
    @ivar trusted: Whether the peer is a trusted proxy.
    @ivar proto: How the client reached the listener, C{b'http'} or
        C{b'https'}.
    @ivar identity: C{(field name, verified client certificate subject or
        None)} once known, on listeners that pass it to backends.
    @ivar client_full: Whether the client's send buffer is full.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>}, or C{None}.
    @ivar counted: Whether the listener's connection filters accepted
        this connection (and must be told when it closes).
    @ivar admitted: Whether this connection holds a place in its factory's
        connection quota (given back when it closes).
    """

    log = Logger()
    admitted = False
    _stall: Optional[_SendStall] = None

    @property
    def connection(self) -> "ClientCodec":
        """
        The client connection (an HTTP/2 stream answers its connection).
        """
        return self

    def __init__(self, factory: HTTPServerFactory):
        self._factory = factory
        self._clock = factory.reactor
        self.client_full = False
        self.client_address = ""
        self.trusted = False
        self.proto = factory.scheme
        self.identity = None
        self._relaying = False
        self.filters = factory.filters
        self.counted = False
        # Requests received on this connection so far.
        self.requests = 0

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        self.client_address = getattr(peer, "host", "") or ""
        self.trusted = self.client_address in factory.trusted_proxies
        self.transport.registerProducer(FullRelay(self._send_full), True)
        self._relaying = True
        no_delay(self.transport)
        factory.connections.add(self)
        filters = self.filters
        if filters is not None and filters.connection_filters:
            if not filters.connection_made(self.client_address):
                self.transport.abortConnection()
                return
            self.counted = True
        if factory.draining:
            self.drain()

    def _identify(self) -> None:
        """
        Learn the client's TLS identity, once: the handshake is over by the
        first request.
        """
        factory = self._factory
        if factory.identity_header is not None and self.identity is None:
            subject = factory.peer_identity(self.transport)
            self.identity = (
                factory.identity_header,
                subject.encode("utf-8") if subject is not None else None,
            )

    def close(self) -> None:
        """
        Close the connection once what was written has been sent.

        The relay registered when the connection was made goes first: a TLS
        transport sends its close_notify, and so closes at all, only once
        no producer is registered.
        """
        if self._relaying:
            self._relaying = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _send_full(self, full: bool) -> None:
        """
        The client's send buffer filled up, or drained: start or stop the
        send timeout, then pause or resume what feeds it.
        """
        deadlines = self._factory.deadlines
        if full and self._stall is None:
            self._stall = _SendStall(
                self, self._clock.seconds() + self._factory.timeouts.send)
            deadlines.add(self._stall)
        elif not full and self._stall is not None:
            deadlines.discard(self._stall)
            self._stall = None
        self._client_full(full)

    def _send_timed_out(self) -> None:
        """
        The client has not taken what the proxy sends for
        C{timeouts.send}: cut the connection (closing it gracefully would
        wait for the same full buffer to drain).
        """
        self._stall = None
        self.log.debug("client {client} does not read: connection cut",
                       client=self.client_address)
        self._send_stalled()
        self.transport.abortConnection()

    def _allowed(self, x: Exchange) -> bool:
        """
        Count a new request against the connection's and the proxy's
        limits.

        @return: Whether it may be forwarded; if not, the caller answers
            503 (the proxy has too many requests in flight).
        """
        factory = self._factory
        self.requests += 1
        limit = factory.limits.max_requests_per_connection
        if limit and self.requests >= limit:
            self._last_request(x)
        if factory.in_flight.acquire():
            x.admitted = True
            return True
        x.reason = "overloaded"
        return False

    def _client_full(self, full: bool) -> None:
        raise NotImplementedError()

    def _send_stalled(self) -> None:
        raise NotImplementedError()

    def _last_request(self, x: Exchange) -> None:
        raise NotImplementedError()

    def drain(self) -> None:
        raise NotImplementedError()


@implementer(IResponseSink)
class HTTPServerProtocol(ClientCodec):
    """
    One client connection.
    """

    log = Logger()

    def __init__(self, factory: HTTPServerFactory):
        super().__init__(factory)
        self._buffer = b""
        self._state = _HEAD
        self._x: Optional[Exchange] = None
        self._paused = 0
        self._processing = False
        self._attached = False
        self._remaining = 0
        self._decoder: Optional[ChunkedDecoder] = None
        self._body_read = 0
        self._framing = H.FRAME_NONE
        self._keep_alive = True
        self._response_started = False
        # Response bytes waiting to leave in one send.
        self._out: list = []
        self._draining = False

    # Connection events

    def connectionMade(self) -> None:
        super().connectionMade()
        self._factory.deadlines.add(self)
        self._set_timer(_T_HEAD, self._factory.timeouts.request_head)

    def dataReceived(self, data: bytes) -> None:
        if self._state == _TUNNEL:
            self._set_timer(_T_TUNNEL, self._factory.timeouts.idle)
            write_now(self._x.upstream.transport, data)
            return
        if self._state == _CLOSED:
            return
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data
        if self._state == _BODY and self._attached:
            factory = self._factory
            self._earn_time(_T_BODY, factory.timeouts.request_body,
                            factory.limits.min_body_rate, len(data))
        self._process()
        if self._state == _BODY:
            # More of this request body is to come.
            quick_ack(self.transport)

    def connectionLost(self, reason=None) -> None:
        self._state = _CLOSED
        self._set_timer(_T_NONE, 0)
        self._factory.deadlines.discard(self)
        self._factory.connection_closed(self)
        x = self._x
        if x is not None:
            self._x = None
            if not x.status:
                # nginx's convention: the client closed before an answer.
                x.status = 499
                x.reason = x.reason or "client_closed"
            self._factory.forwarder.cancel(x)
            self._factory.exchange_ended(x)

    # Input processing

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while self._state != _CLOSED:
                state = self._state
                if state == _HEAD:
                    if self.client_full:
                        # Not before the client takes the last answer:
                        # answers to pipelined requests would pile up here.
                        self._pause(_PAUSE_CLIENT)
                        break
                    if not self._read_head():
                        break
                elif state == _BODY and self._attached:
                    if not self._read_body():
                        break
                else:
                    break
            if len(self._buffer) > BUFFER_LIMIT and self._state != _CLOSED:
                self._pause(_PAUSE_BUFFER)
            else:
                self._resume(_PAUSE_BUFFER)
        finally:
            self._processing = False

    def _read_head(self) -> bool:
        buf = self._buffer
        if buf[:2] == b"\r\n":
            # RFC 9112 2.2: ignore empty lines (CRLF, nothing else) before
            # a request line.
            while buf[:2] == b"\r\n":
                buf = buf[2:]
            self._buffer = buf
            if not buf:
                return False
        if self._timer_kind != _T_HEAD:
            self._set_timer(_T_HEAD, self._factory.timeouts.request_head)
        limits = self._factory.limits
        if len(buf) > limits.max_uri_length and target_too_long(buf, limits.max_uri_length):
            self._reject(414, "uri_too_long")
            return False
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if buf.count(b"\n") != buf.count(b"\r\n"):
                # A bare LF: this head will never end the way it must.
                self._reject(400, "bare_cr_lf")
            elif len(buf) > limits.max_head_size:
                line_end = buf.find(b"\r\n")
                if line_end < 0 or line_end > limits.max_head_size:
                    self._reject(414, "request_line_too_long")
                else:
                    self._reject(431, "head_too_large")
            return False
        if end + 4 > limits.max_head_size:
            self._reject(431, "head_too_large")
            return False
        try:
            request = parse_request_head(buf[:end], limits.max_header_count,
                                         self._factory.escaped_slashes)
        except ParseError as e:
            self._reject(e.status, e.reason)
            return False
        self._buffer = buf[end + 4:]
        if request.content_length is not None:
            if limits.max_body_size and request.content_length > limits.max_body_size:
                self._reject(413, "body_too_large")
                return False
            self._remaining = request.content_length
        self._decoder = ChunkedDecoder() if request.chunked else None
        self._body_read = 0
        # _attached and _response_started are False here: as set in
        # __init__, and set back by _end_exchange before the next head.
        self._state = _BODY if request.has_body else _WAIT
        self._set_timer(_T_NONE, 0)
        x = self._x = Exchange(request, self.client_address, self, self._clock.seconds())
        factory = self._factory
        if factory.redirect_port is not None:
            self._redirect(x, factory.redirect_port)
            return True
        if not self._allowed(x):
            self._answer(x, 503, self._keeps(x), [RETRY_AFTER])
            return True
        self._identify()
        factory.forwarder.forward(x)
        return True

    def _read_body(self) -> bool:
        """
        Pass buffered body bytes upstream.  Return C{True} when the body is
        complete.
        """
        x = self._x
        buf = self._buffer
        if not buf:
            return False
        upstream = x.upstream
        x.body_started = True
        max_body = self._factory.limits.max_body_size
        if self._decoder is None:
            n = self._remaining
            if len(buf) <= n:
                self._buffer = b""
                self._remaining = n - len(buf)
                upstream.write_body(buf)
            else:
                self._buffer = buf[n:]
                self._remaining = 0
                upstream.write_body(buf[:n])
            if self._remaining:
                return False
        else:
            try:
                pieces, rest = self._decoder.feed(buf)
            except ParseError as e:
                self._upstream_gone()
                self._reject(e.status, e.reason)
                return False
            self._buffer = rest if rest is not None else b""
            for piece in pieces:
                self._body_read += len(piece)
                upstream.write_body(piece)
            if max_body and self._body_read > max_body:
                self._upstream_gone()
                self._reject(413, "body_too_large")
                return False
            if rest is None:
                return False
        if self._x is not x or self._state != _BODY:
            # The response ended while the body was being sent.
            return True
        self._state = _WAIT
        self._set_timer(_T_NONE, 0)
        upstream.end_body()
        return True

    # Called by the upstream side

    def upstream_attached(self, x: Exchange) -> None:
        """
        The request head went to a backend: start sending the body.
        """
        if x is not self._x:
            return
        self._attached = True
        if self._state == _BODY:
            req = x.request
            if req.expect_continue and not self._buffer:
                write_now(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
            self._set_timer(_T_BODY, self._factory.timeouts.request_body)
            if self.client_full:
                x.upstream.pause_reading(True)
            self._process()
        elif self.client_full:
            x.upstream.pause_reading(True)

    def upstream_full(self, full: bool) -> None:
        """
        The upstream connection's send buffer is full (or drained again).
        """
        if full:
            self._pause(_PAUSE_UPSTREAM)
        else:
            self._resume(_PAUSE_UPSTREAM)
        if self._state == _BODY and self._attached:
            # While the backend is the slow one, the client is not to blame.
            if full:
                self._set_timer(_T_NONE, 0)
            else:
                self._set_timer(_T_BODY, self._factory.timeouts.request_body)

    def informational(self, x: Exchange, resp) -> None:
        """
        Pass on a 1xx response other than 100 and 101.
        """
        if x is self._x and x.request.version[1] == 1:
            self._out.append(H.response_head(
                resp, framing=H.FRAME_NONE, keep_alive=True, client_minor=1,
                via=self._factory.via,
            ))

    def response_head(self, x: Exchange, resp, has_body: bool, extra=None) -> None:
        """
        The backend's final response head arrived.

        @param has_body: Whether the response carries a body at all.
        @param extra: Fields to add for a protocol switch (101).
        """
        if x is not self._x:
            return
        req = x.request
        minor = req.version[1]
        if not has_body:
            framing = H.FRAME_NONE
        elif resp.content_length is not None:
            framing = H.FRAME_LENGTH
        elif minor == 1:
            framing = H.FRAME_CHUNKED
        else:
            framing = H.FRAME_CLOSE
        # A protocol switch keeps the connection, as a tunnel.
        keep = resp.status == 101 or (framing != H.FRAME_CLOSE and self._keeps(x))
        self._framing = framing
        self._keep_alive = keep
        self._response_started = True
        x.status = resp.status
        rules = x.route.response_rules if x.route is not None else H.NO_RULES
        if x.response_fields:
            extra = list(extra or ()) + x.response_fields
        if self._factory.hsts is not None:
            extra = list(extra or ()) + [self._factory.hsts]
        self._out.append(H.response_head(
            resp, framing=framing, keep_alive=keep, client_minor=minor,
            via=self._factory.via, rules=rules, extra=extra,
        ))

    def response_body(self, x: Exchange, data: bytes) -> None:
        if x is not self._x:
            return
        x.body_bytes += len(data)
        if self._framing == H.FRAME_CHUNKED:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._out.append(data)

    def flush(self) -> None:
        """
        Send what the upstream side passed on so far, in one write.  Called
        by it once per read from the backend.
        """
        out = self._out
        if out:
            self._out = []
            write_now(self.transport, out[0] if len(out) == 1 else b"".join(out))

    def response_end(self, x: Exchange) -> None:
        """
        The whole response has been passed on.
        """
        if x is not self._x:
            return
        if self._framing == H.FRAME_CHUNKED:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self._end_exchange(self._keep_alive and self._state == _WAIT)

    def upstream_failed(self, x: Exchange, status: int, reason: str) -> None:
        """
        The request could not be completed: answer with C{status} if no
        response has started, else cut the connection so that the client
        sees an incomplete response rather than a wrong complete one.
        """
        if x is not self._x:
            return
        x.reason = reason
        if self._response_started:
            self.flush()
            self._end_exchange(False)
            self.close()
            return
        self._answer(x, status, self._keeps(x))

    def tunnel(self, x: Exchange) -> None:
        """
        The backend accepted a protocol upgrade: from now on, bytes flow
        both ways untouched until either side closes.
        """
        if x is not self._x:
            return
        self._state = _TUNNEL
        self._attached = True
        self._set_timer(_T_TUNNEL, self._factory.timeouts.idle)
        self.flush()
        if self._buffer:
            data, self._buffer = self._buffer, b""
            write_now(x.upstream.transport, data)
        self._resume(_PAUSE_BUFFER)

    def tunnel_data(self, data: bytes) -> None:
        self._set_timer(_T_TUNNEL, self._factory.timeouts.idle)
        write_now(self.transport, data)

    # Internals

    def _keeps(self, x: Exchange) -> bool:
        """
        Whether the connection can stay open after C{x}'s answer: the
        client wants it, its request was read whole, and the proxy is not
        shutting down.
        """
        return self._state == _WAIT and x.request.keep_alive and not self._draining

    def _last_request(self, x: Exchange) -> None:
        # This connection's answer to it says Connection: close.
        self._draining = True

    def _send_stalled(self) -> None:
        if self._x is not None:
            self._x.reason = "send_timeout"

    def _answer(self, x: Exchange, status: int, keep: bool, fields=()) -> None:
        x.status = status
        response = H.error_response(status, H.PHRASES.get(status, b"Error"), keep, fields)
        x.body_bytes = len(response) - response.index(b"\r\n\r\n") - 4
        self._out.append(response)
        self.flush()
        self._end_exchange(keep)

    def drain(self) -> None:
        """
        Graceful shutdown: close now if idle between requests, else finish
        the request under way with C{Connection: close}.  A connection
        that has not sent its first request yet is waited for (as long as
        C{request_head} allows): it was accepted just before the drain,
        and its client is sending a request that closing would lose.
        """
        if self._state == _HEAD and not self._buffer and self._timer_kind == _T_IDLE:
            self._state = _CLOSED
            self.close()
        else:
            self._draining = True

    def _redirect(self, x: Exchange, port: int) -> None:
        """
        Send the client to the same URL over https (308 keeps the method
        and body).
        """
        host = host_name(x.request.host)
        if not host:
            self._reject(400, "missing_host")
            return
        if x.request.target == b"*":
            # OPTIONS * asks about the server, not a resource (RFC 9110
            # 9.3.7, a "ping"): there is no URL to send it to.
            x.reason = "options_asterisk"
            self._answer(x, 200, self._keeps(x))
            return
        authority = host if port == 443 else b"%s:%d" % (host, port)
        x.reason = "https_redirect"
        self._answer(x, 308, self._keeps(x),
                     [(b"Location", b"https://" + authority + x.request.target)])

    def _reject(self, status: int, reason: str) -> None:
        """
        A request (or its body) is malformed: answer and close.
        """
        x = self._x
        if x is None:
            # Log what we could read of it.
            x = self._x = Exchange(UNPARSED, self.client_address, self, self._clock.seconds())
        x.reason = reason
        if self._response_started:
            self._end_exchange(False)
            self.close()
        else:
            self._answer(x, status, False)

    def _upstream_gone(self) -> None:
        x = self._x
        if x is not None:
            self._factory.forwarder.cancel(x)

    def _end_exchange(self, keep: bool) -> None:
        x = self._x
        self._x = None
        self._attached = False
        # A problem with the next request is answered, not cut short.
        self._response_started = False
        self._resume(_PAUSE_UPSTREAM)
        self._factory.exchange_ended(x)
        if not keep:
            self._state = _CLOSED
            self._set_timer(_T_NONE, 0)
            self.close()
            return
        self._state = _HEAD
        self._set_timer(_T_IDLE, self._factory.timeouts.idle)
        if self._buffer:
            self._process()
        else:
            self._resume(_PAUSE_BUFFER)

    def _client_full(self, full: bool) -> None:
        self.client_full = full
        x = self._x
        if x is not None and x.upstream is not None:
            x.upstream.pause_reading(full)
        if not full and self._paused & _PAUSE_CLIENT:
            self._resume(_PAUSE_CLIENT)
            self._process()

    def _pause(self, why: int) -> None:
        if not self._paused:
            self.transport.pauseProducing()
        self._paused |= why

    def _resume(self, why: int) -> None:
        if self._paused & why:
            self._paused &= ~why
            if not self._paused and self._state != _CLOSED:
                self.transport.resumeProducing()

    def _wait_expired(self, kind: int) -> None:
        if self._state == _CLOSED:
            return
        if kind == _T_HEAD and self._buffer:
            self._reject(408, "request_head_timeout")
        elif kind == _T_BODY:
            self._upstream_gone()
            self._reject(408, "request_body_timeout")
        else:
            # Idle keep-alive, or a silent tunnel: close quietly.
            if kind == _T_TUNNEL and self._x is not None:
                self._x.reason = "tunnel_idle_timeout"
                self._factory.forwarder.cancel(self._x)
            self._state = _CLOSED
            self.close()


class _Refused(Refused):
    """
    A connection refused at the connection limit: closed at once, and
    logged as a request the proxy could not read, with 503
    C{max_connections}.
    """

    def __init__(self, factory: HTTPServerFactory):
        self._factory = factory

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        x = Exchange(UNPARSED, getattr(peer, "host", "") or "", self, factory.reactor.seconds())
        x.status, x.reason = 503, "max_connections"
        super().connectionMade()
        factory.exchange_ended(x)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """
    What one listener's L{HTTPServerFactory} is set to, built from the
    configuration by L{twistproxy.build}.

    @ivar timeouts: The L{Timeouts} of every wait.
    @ivar limits: The L{Limits} on heads, bodies, connections and requests.
    @ivar trusted_proxies: The networks whose C{Forwarded} fields are
        believed, as configuration strings.
    @ivar via: The proxy's name in C{Via}.
    @ivar scheme: How clients reach this listener, C{b'http'} or
        C{b'https'}, as told to backends in C{X-Forwarded-Proto}.
    @ivar redirect_port: When set, every request is answered with a 308
        redirect to https on this port instead of being forwarded.
    @ivar hsts: The C{max-age} of the C{Strict-Transport-Security} field
        added to responses, or C{0} for none.
    @ivar identity_header: The request field carrying the verified TLS
        client subject to backends (stripped from what clients send), or
        C{None}.
    @ivar http2: Whether clients may choose HTTP/2 by ALPN (TLS listeners).
    @ivar h2c: Whether a plain connection opening with the HTTP/2 preface
        speaks HTTP/2 (prior knowledge).
    @ivar escaped_slashes: What C{%2F} and C{%5C} in a request path do,
        one of L{twistproxy.config.ESCAPED_SLASHES}.
    """

    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    trusted_proxies: Tuple[str, ...] = ()
    via: str = "twistproxy"
    scheme: bytes = b"http"
    redirect_port: Optional[int] = None
    hsts: int = 0
    identity_header: Optional[str] = None
    http2: bool = False
    h2c: bool = False
    escaped_slashes: str = KEEP


class HTTPServerFactory(Factory):
    """
    Builds L{HTTPServerProtocol}s for one listener.

    Its L{ServerSettings} are unpacked into attributes of the same names,
    which the protocols read (so a new setting needs no line here): C{hsts}
    as the field to add, C{identity_header} and C{via} as bytes,
    C{trusted_proxies} as a L{TrustedProxies
    <twistproxy.http.headers.TrustedProxies>}.

    @ivar forwarder: Decides where each request goes; has
        C{forward(exchange)} and C{cancel(exchange)}.
    @ivar on_exchange_end: Called with each finished L{Exchange} (the access
        log), or C{None}.
    @ivar filters: The listener's L{FilterChain
        <twistproxy.filters.FilterChain>}, or C{None}.
    """

    protocol = HTTPServerProtocol
    # One log line per listener start is plenty; the access log says the rest.
    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        forwarder,
        settings: ServerSettings = ServerSettings(),
        on_exchange_end=None,
        peer_identity=None,
        filters=None,
        connections: Optional[Quota] = None,
        in_flight: Optional[Quota] = None,
    ):
        """
        @param peer_identity: Finds the verified TLS client subject of a
            transport, for C{settings.identity_header}.
        @param connections: The quota of this listener's connections; by
            default one of C{settings.limits}.
        @param in_flight: The quota of requests in flight; by default one of
            C{settings.limits}.
        """
        self.reactor = reactor
        for field in dataclasses.fields(settings):
            setattr(self, field.name, getattr(settings, field.name))
        # What the protocols read, in the form they use it.
        self.hsts = (
            (b"Strict-Transport-Security", b"max-age=%d" % settings.hsts) if settings.hsts
            else None)
        identity = settings.identity_header
        self.identity_header = identity.encode("ascii") if identity else None
        self.trusted_proxies = H.TrustedProxies(settings.trusted_proxies)
        self.via = settings.via.encode("ascii")
        self.filters = filters
        if connections is None or in_flight is None:
            own = quotas(settings.limits, reactor)
            connections = connections or own[0]
            in_flight = in_flight or own[1]
        self.quota = connections
        self.in_flight = in_flight
        self.connections: set = set()
        self.draining = False
        self._emptied = Emptied(self.connections)
        self.peer_identity = peer_identity
        self.deadlines = Deadlines(reactor)
        self.forwarder = forwarder
        self._on_exchange_end = on_exchange_end

    def buildProtocol(self, addr):
        if not self.quota.acquire():
            return _Refused(self)
        if self.http2 or self.h2c:
            from twistproxy.http.negotiate import Negotiating

            protocol = Negotiating(self)
        else:
            protocol = HTTPServerProtocol(self)
        protocol.admitted = True
        return protocol

    def configure(self, config, forwarder) -> None:
        """
        Serve new requests with a reloaded configuration.
        """
        self.forwarder = forwarder
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.trusted_proxies = H.TrustedProxies(config.forwarding.trusted_proxies)
        self.via = config.forwarding.via.encode("ascii")

    def drain(self):
        """
        Graceful shutdown of this factory's connections: idle ones close at
        once, busy ones after their current response (HTTP/1.1) or streams
        (HTTP/2).

        @return: A Deferred that fires when the last connection has closed.
        """
        self.draining = True
        for protocol in list(self.connections):
            protocol.drain()
        return self._emptied.wait()

    def abort_all(self) -> None:
        """
        Cut every connection now (the drain time is over).
        """
        for protocol in list(self.connections):
            protocol.transport.abortConnection()

    def connection_closed(self, protocol) -> None:
        if protocol.admitted:
            protocol.admitted = False
            self.quota.release()
        stall = getattr(protocol, "_stall", None)
        if stall is not None:
            self.deadlines.discard(stall)
            protocol._stall = None
        self.connections.discard(protocol)
        if protocol.counted:
            protocol.counted = False
            protocol.filters.connection_lost(protocol.client_address)
        self._emptied.check()

    def exchange_ended(self, x: Exchange) -> None:
        if x.admitted:
            x.admitted = False
            self.in_flight.release()
        self.forwarder.release(x)
        if self._on_exchange_end is not None:
            self._on_exchange_end(x)
