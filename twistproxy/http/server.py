# -*- test-case-name: tests.test_proxy -*-
"""
The downstream codec: HTTP/1.1 spoken to clients.

L{HTTPServerProtocol} reads requests from one client connection, hands each
to the forwarder as an L{Exchange}, streams the request body to the upstream
connection the forwarder attaches, and writes the response back.  It knows
nothing of routes, balancers or pools: it calls C{forwarder.forward(exchange)} and
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

What the listener's factory (L{twistproxy.http.listener}) admits is bounded
too (L{twistproxy.admission}): its connections by a L{Quota} (beyond which
it refuses them), requests in flight by another (beyond which they are
answered 503 at once), and the requests served on one connection by
C{limits.max_requests_per_connection}.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger
from zope.interface import implementer

from twistproxy.deadlines import Wait
from twistproxy.flow import SENDMSG_MIN, quick_ack, write_all_now, write_now
from twistproxy.http import headers as H
from twistproxy.http.answers import PHRASES, RETRY_AFTER, error_response
from twistproxy.http.codec import ClientCodec
from twistproxy.interfaces import IResponseSink
from twistproxy.http.exchange import Exchange
from twistproxy.http.parser import (
    UNPARSED,
    ChunkedDecoder,
    ParseError,
    check_body_size,
    host_name,
    parse_request_head,
    target_too_long,
)

# The waits of this codec, bound once: a member looked up on the enum
# class costs several times a global's lookup on CPython.
_W_NONE, _W_IDLE, _W_HEAD, _W_BODY, _W_TUNNEL = (
    Wait.NONE, Wait.IDLE, Wait.HEAD, Wait.BODY, Wait.TUNNEL)

BUFFER_LIMIT = 65536

# Connection states.
_HEAD, _BODY, _WAIT, _TUNNEL, _CLOSED = range(5)
# Why reading from the client is paused (a bit mask).
_PAUSE_BUFFER, _PAUSE_UPSTREAM, _PAUSE_CLIENT = 1, 2, 4


@implementer(IResponseSink)
class HTTPServerProtocol(ClientCodec):
    """
    One client connection.
    """

    log = Logger()

    def __init__(self, factory):
        super().__init__(factory)
        self._buffer = b""
        self._state = _HEAD
        self._exchange: Optional[Exchange] = None
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
        self._set_timer(_W_HEAD, self._factory.timeouts.request_head)

    def dataReceived(self, data: bytes) -> None:
        if self._state == _TUNNEL:
            self._set_timer(_W_TUNNEL, self._factory.timeouts.idle)
            write_now(self._exchange.upstream.transport, data)
            return
        if self._state == _CLOSED:
            return
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data
        if self._state == _BODY and self._attached:
            factory = self._factory
            self._earn_time(_W_BODY, factory.timeouts.request_body,
                            factory.limits.min_body_rate, len(data))
        self._process()
        if self._state == _BODY:
            # More of this request body is to come.
            quick_ack(self.transport)

    def connectionLost(self, reason=None) -> None:
        self._state = _CLOSED
        self._set_timer(_W_NONE, 0)
        self._factory.deadlines.discard(self)
        self._factory.connection_closed(self)
        exchange = self._exchange
        if exchange is not None:
            self._exchange = None
            if not exchange.status:
                # nginx's convention: the client closed before an answer.
                exchange.status = 499
                exchange.reason = exchange.reason or "client_closed"
            self._factory.forwarder.cancel(exchange)
            self._factory.exchange_ended(exchange)

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
            elif self._paused & _PAUSE_BUFFER:
                # Tested here: reading is seldom paused, and this runs on
                # every read.
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
        limits = self._factory.limits
        if len(buf) > limits.max_uri_length and target_too_long(buf, limits.max_uri_length):
            self._reject(414, "uri_too_long")
            return False
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            # Only a head still to come needs its timeout: every way on
            # from a whole head (an answer, or waiting for the backend)
            # sets a timer of its own before this read's event is over.
            if self._timer_kind != _W_HEAD:
                self._set_timer(_W_HEAD, self._factory.timeouts.request_head)
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
        factory = self._factory
        try:
            request = parse_request_head(buf[:end], limits.max_header_count,
                                         factory.escaped_slashes)
            length = request.content_length
            if length is not None:
                check_body_size(length, limits.max_body_size)
        except ParseError as e:
            self._reject(e.status, e.reason)
            return False
        self._buffer = buf[end + 4:]
        # _attached and _response_started are False here: as set in
        # __init__, and set back by _end_exchange before the next head.
        # (What RequestHead.has_body says, without the property's call.)
        if request.chunked:
            self._decoder = ChunkedDecoder()
            self._state = _BODY
        else:
            self._decoder = None
            if length is not None:
                self._remaining = length
            self._state = _BODY if length else _WAIT
        self._body_read = 0
        self._set_timer(_W_NONE, 0)
        exchange = self._exchange = Exchange(request, self.client_address, self, self._clock.seconds())
        # ACME answers and TLS identities cost no call where there are none.
        if factory.challenges is not None and self._answered_challenge(exchange):
            return True
        if factory.redirect_port is not None:
            self._redirect(exchange, factory.redirect_port)
            return True
        if not self._allowed(exchange):
            self._answer(exchange, 503, self._keeps(exchange), [RETRY_AFTER])
            return True
        if factory.identity_header is not None:
            self._identify()
        factory.forwarder.forward(exchange)
        return True

    def _read_body(self) -> bool:
        """
        Pass buffered body bytes upstream.  Return C{True} when the body is
        complete.
        """
        exchange = self._exchange
        buf = self._buffer
        if not buf:
            return False
        upstream = exchange.upstream
        exchange.body_started = True
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
        if self._exchange is not exchange or self._state != _BODY:
            # The response ended while the body was being sent.
            return True
        self._state = _WAIT
        self._set_timer(_W_NONE, 0)
        upstream.end_body()
        return True

    # Called by the upstream side

    def upstream_attached(self, exchange: Exchange) -> None:
        """
        The request head went to a backend: start sending the body.
        """
        if exchange is not self._exchange:
            return
        self._attached = True
        if self._state == _BODY:
            req = exchange.request
            if req.expect_continue and not self._buffer:
                write_now(self.transport, b"HTTP/1.1 100 Continue\r\n\r\n")
            self._set_timer(_W_BODY, self._factory.timeouts.request_body)
            if self.client_full:
                exchange.upstream.pause_reading(True)
            self._process()
        elif self.client_full:
            exchange.upstream.pause_reading(True)

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
                self._set_timer(_W_NONE, 0)
            else:
                self._set_timer(_W_BODY, self._factory.timeouts.request_body)

    def informational(self, exchange: Exchange, resp) -> None:
        """
        Pass on a 1xx response other than 100 and 101.
        """
        if exchange is self._exchange and exchange.request.version[1] == 1:
            self._out.append(H.response_head(
                resp, framing=H.FRAME_NONE, keep_alive=True, client_minor=1,
                via=self._factory.via,
            ))

    def response_head(self, exchange: Exchange, resp, has_body: bool, extra=None) -> None:
        """
        The backend's final response head arrived.

        @param has_body: Whether the response carries a body at all.
        @param extra: Fields to add for a protocol switch (101).
        """
        if exchange is not self._exchange:
            return
        req = exchange.request
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
        keep = resp.status == 101 or (framing != H.FRAME_CLOSE and self._keeps(exchange))
        self._framing = framing
        self._keep_alive = keep
        self._response_started = True
        exchange.status = resp.status
        route = exchange.route
        rules = route.response_rules if route is not None else H.NO_RULES
        if exchange.response_fields:
            extra = list(extra or ()) + exchange.response_fields
        factory = self._factory
        if factory.hsts is not None:
            extra = list(extra or ()) + [factory.hsts]
        # By position: a call with keywords costs more on CPython.
        self._out.append(H.response_head(resp, framing, keep, minor, factory.via, rules, extra))

    def response_body(self, exchange: Exchange, data: bytes) -> None:
        if exchange is not self._exchange:
            return
        exchange.body_bytes += len(data)
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
            if len(out) == 1:
                write_now(self.transport, out[0])
            elif len(out[-1]) >= SENDMSG_MIN:
                # A head and a large body (or its start), as they were
                # read: sent together without a copy of the body.  (Chunked
                # bodies end with a CRLF, and are joined.)
                write_all_now(self.transport, out)
            else:
                write_now(self.transport, b"".join(out))

    def response_end(self, exchange: Exchange) -> None:
        """
        The whole response has been passed on.
        """
        if exchange is not self._exchange:
            return
        if self._framing == H.FRAME_CHUNKED:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self._end_exchange(self._keep_alive and self._state == _WAIT)

    def upstream_failed(self, exchange: Exchange, status: int, reason: str) -> None:
        """
        The request could not be completed: answer with C{status} if no
        response has started, else cut the connection so that the client
        sees an incomplete response rather than a wrong complete one.
        """
        if exchange is not self._exchange:
            return
        exchange.reason = reason
        if self._response_started:
            self.flush()
            self._end_exchange(False)
            self.close()
            return
        self._answer(exchange, status, self._keeps(exchange))

    def tunnel(self, exchange: Exchange) -> None:
        """
        The backend accepted a protocol upgrade: from now on, bytes flow
        both ways untouched until either side closes.
        """
        if exchange is not self._exchange:
            return
        self._state = _TUNNEL
        self._attached = True
        self._set_timer(_W_TUNNEL, self._factory.timeouts.idle)
        self.flush()
        if self._buffer:
            data, self._buffer = self._buffer, b""
            write_now(exchange.upstream.transport, data)
        self._resume(_PAUSE_BUFFER)

    def tunnel_data(self, data: bytes) -> None:
        self._set_timer(_W_TUNNEL, self._factory.timeouts.idle)
        write_now(self.transport, data)

    # Internals

    def _keeps(self, exchange: Exchange) -> bool:
        """
        Whether the connection can stay open after C{exchange}'s answer: the
        client wants it, its request was read whole, and the proxy is not
        shutting down.
        """
        return self._state == _WAIT and exchange.request.keep_alive and not self._draining

    def _last_request(self, exchange: Exchange) -> None:
        # This connection's answer to it says Connection: close.
        self._draining = True

    def _send_stalled(self) -> None:
        if self._exchange is not None:
            self._exchange.reason = "send_timeout"

    def _answer(self, exchange: Exchange, status: int, keep: bool, fields=()) -> None:
        exchange.status = status
        response = error_response(status, PHRASES.get(status, b"Error"), keep, fields)
        exchange.body_bytes = len(response) - response.index(b"\r\n\r\n") - 4
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
        if self._state == _HEAD and not self._buffer and self._timer_kind == _W_IDLE:
            self._state = _CLOSED
            self.close()
        else:
            self._draining = True

    def _redirect(self, exchange: Exchange, port: int) -> None:
        """
        Send the client to the same URL over https (308 keeps the method
        and body).
        """
        host = host_name(exchange.request.host)
        if not host:
            self._reject(400, "missing_host")
            return
        if exchange.request.target == b"*":
            # OPTIONS * asks about the server, not a resource (RFC 9110
            # 9.3.7, a "ping"): there is no URL to send it to.
            exchange.reason = "options_asterisk"
            self._answer(exchange, 200, self._keeps(exchange))
            return
        authority = host if port == 443 else b"%s:%d" % (host, port)
        exchange.reason = "https_redirect"
        self._answer(exchange, 308, self._keeps(exchange),
                     [(b"Location", b"https://" + authority + exchange.request.target)])

    def _reject(self, status: int, reason: str) -> None:
        """
        A request (or its body) is malformed: answer and close.
        """
        exchange = self._exchange
        if exchange is None:
            # Log what we could read of it.
            exchange = self._exchange = Exchange(
                UNPARSED, self.client_address, self, self._clock.seconds())
        exchange.reason = reason
        if self._response_started:
            self._end_exchange(False)
            self.close()
        else:
            self._answer(exchange, status, False)

    def _upstream_gone(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            self._factory.forwarder.cancel(exchange)

    def _end_exchange(self, keep: bool) -> None:
        exchange = self._exchange
        self._exchange = None
        self._attached = False
        # A problem with the next request is answered, not cut short.
        self._response_started = False
        if self._paused:
            self._resume(_PAUSE_UPSTREAM)
        self._factory.exchange_ended(exchange)
        if not keep:
            self._state = _CLOSED
            self._set_timer(_W_NONE, 0)
            self.close()
            return
        self._state = _HEAD
        self._set_timer(_W_IDLE, self._factory.timeouts.idle)
        if self._buffer:
            self._process()
        elif self._paused:
            self._resume(_PAUSE_BUFFER)

    def _client_full(self, full: bool) -> None:
        self.client_full = full
        exchange = self._exchange
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading(full)
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

    def _wait_expired(self, kind: Wait) -> None:
        if self._state == _CLOSED:
            return
        if kind == _W_HEAD and self._buffer:
            self._reject(408, "request_head_timeout")
        elif kind == _W_BODY:
            self._upstream_gone()
            self._reject(408, "request_body_timeout")
        else:
            # Idle keep-alive, or a silent tunnel: close quietly.
            if kind == _W_TUNNEL and self._exchange is not None:
                self._exchange.reason = "tunnel_idle_timeout"
                self._factory.forwarder.cancel(self._exchange)
            self._state = _CLOSED
            self.close()
